"""The embedded toy world that runs offline: synthetic EO scenes with questions (synth), the tiny
Qwen2.5-VL built from scratch (tiny), and what --model / --data mean when not given (defaults)."""
