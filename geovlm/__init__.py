"""The library under the entry points (train_sft.py, train_grpo.py, eval.py), ground floor first:

    frames, parsing        coordinate frames; reading answers out of completions (total on any string)
    tasks                  the task registry: each task's answer check, target text, parser, headline metric
    imagery                GeoTIFF / multi-band images to RGB
    metrics, baselines     the field's metrics; the question-only and images-permuted controls
    formats                readers of the field's data formats -> our JSONL (python -m geovlm.formats)
    fsdp, lora, kernels    FSDP2 wrapping; LoRA adapters; the fused log-prob head and the compiled decode
    distributed, rng, schedule, logs, checkpoints, flags, run
                           the run plumbing: processes, seeds, lr and data order, logs, exact resume,
                           shared flags, a run's start and stop
    plot, viewer           PNG curves of log.jsonl; completions drawn on their images (HTML)

Nothing here imports an entry point, tools/ or scripts/ (tests/test_layout.py walks the imports).
"""
