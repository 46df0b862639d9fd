"""imagery.py: GeoTIFF / non-8-bit rasters -> RGB (band choice, nodata, percentile stretch), 8-bit
pictures exactly as PIL makes them, and full decoding at validation."""

import argparse
import gc
import json
import os
import warnings

import numpy as np
import pytest
from PIL import Image

import data
from geovlm import imagery
from geovlm.flags import add_imagery_flags
from geovlm.run import load_data

tifffile = pytest.importorskip("tifffile")

RNG = np.random.default_rng(0)


def landsat_band(path, h=60, w=80):
    """An int16 band like the issue's Landsat one: values 1,944-16,000, a -9999 nodata border."""
    band = RNG.integers(1944, 16001, (h, w)).astype(np.int16)
    band[:8] = -9999
    band[:, :5] = -9999
    tifffile.imwrite(path, band, extratags=[(imagery.GDAL_NODATA, "s", 0, "-9999", True)])
    return band


def not_binary(rgb, valid):
    """Most valid pixels are neither black nor white and the picture uses many grey levels."""
    v = rgb[valid]
    return ((v == 0) | (v == 255)).mean() < 0.1 and len(np.unique(v)) > 100


def test_int16_with_nodata_tag_is_stretched_not_clipped(tmp_path):
    path = tmp_path / "landsat.tif"
    band = landsat_band(path)
    pixels, nodata = imagery.read_bands(path)
    assert pixels.shape == (60, 80, 1) and pixels.dtype == np.int16 and nodata == -9999
    rgb = np.asarray(imagery.load_image(path))
    valid = band != -9999
    assert rgb.shape == (60, 80, 3) and rgb.dtype == np.uint8
    assert not_binary(rgb, valid)
    assert (rgb[~valid] == 0).all()  # nodata masked: black, and not part of the stretch
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()  # one band: grey
    # what PIL's convert("RGB") did before: almost everything white
    old = np.asarray(Image.open(path).convert("RGB"))
    assert (old[valid] == 255).mean() > 0.9


def test_stretch_is_linear_between_percentiles():
    ramp = np.arange(10000, dtype=np.uint16).reshape(100, 100) * 3 + 500
    rgb = imagery.to_rgb(ramp, stretch=(2, 98))[..., 0].ravel()
    lo, hi = np.percentile(ramp, [2, 98])
    expect = np.clip(np.rint((ramp.ravel() - lo) * 255 / (hi - lo)), 0, 255)
    assert np.abs(rgb.astype(int) - expect).max() <= 1
    assert (np.diff(rgb.astype(int)) >= 0).all()
    assert (rgb[:150] == 0).all() and (rgb[-150:] == 255).all()
    minmax = imagery.to_rgb(ramp, stretch=(0, 100))[..., 0]
    assert minmax.min() == 0 and minmax.max() == 255


def test_uint16_four_bands_band_choice(tmp_path):
    h, w = 50, 70
    bands = np.stack([RNG.integers(0, 4000, (h, w)) + 1000 * k for k in range(4)]).astype(np.uint16)
    bands[3] = np.linspace(0, 60000, h * w).reshape(h, w)  # NIR: a ramp, unlike the others
    path = tmp_path / "rgbn.tif"
    # GDAL's band-interleaved layout
    tifffile.imwrite(path, bands, photometric="minisblack", planarconfig="separate")
    assert imagery.read_bands(path)[0].shape == (h, w, 4)
    assert imagery.image_size(path) == (w, h)
    default = np.asarray(imagery.load_image(path))
    false_colour = np.asarray(imagery.load_image(path, bands=(4, 3, 2)))
    for k, b in enumerate((4, 3, 2)):  # each channel is its own band, stretched on its own
        assert (false_colour[..., k] == imagery.to_rgb(bands[b - 1])[..., 0]).all()
    for k, b in enumerate((1, 2, 3)):
        assert (default[..., k] == imagery.to_rgb(bands[b - 1])[..., 0]).all()
    assert not_binary(false_colour, np.ones((h, w), bool))
    nir = np.asarray(imagery.load_image(path, bands="4"))
    assert (nir[..., 0] == false_colour[..., 0]).all() and (nir[..., 1] == nir[..., 0]).all()
    with pytest.raises(imagery.ImageError, match="band 5 requested but the image has 4"):
        imagery.load_image(path, bands=(5, 3, 2))


def test_pixel_interleaved_multiband_tiff(tmp_path):
    arr = RNG.integers(0, 30000, (30, 40, 5)).astype(np.uint16)
    path = tmp_path / "five.tif"
    tifffile.imwrite(path, arr, photometric="minisblack", planarconfig="contig")
    got = np.asarray(imagery.load_image(path, bands=(5, 1, 3)))
    assert (got[..., 0] == imagery.to_rgb(arr[..., 4])[..., 0]).all()
    assert (got[..., 2] == imagery.to_rgb(arr[..., 2])[..., 0]).all()


def test_float32_nan_and_given_nodata(tmp_path):
    arr = RNG.normal(0.12, 0.04, (40, 30, 3)).astype(np.float32)
    arr[:4, :, 0] = np.nan
    arr[-3:, :, 2] = -1.0
    path = tmp_path / "reflectance.tif"
    tifffile.imwrite(path, arr, photometric="rgb")
    rgb = np.asarray(imagery.load_image(path, nodata=-1))
    assert (rgb[:4] == 0).all() and (rgb[-3:] == 0).all()  # a pixel masked in any chosen band is black
    valid = np.ones((40, 30), bool)
    valid[:4] = valid[-3:] = False
    assert not_binary(rgb, valid)
    # without the nodata value the -1 rows are part of the stretch: they become the darkest values
    assert (np.asarray(imagery.load_image(path))[-3:, :, 2] == 0).all()


def test_given_nodata_overrides_the_tag(tmp_path):
    path = tmp_path / "landsat.tif"
    band = landsat_band(path)
    target = band[30, 40]
    rgb = np.asarray(imagery.load_image(path, nodata=int(target)))[..., 0]
    assert (rgb[band == target] == 0).all()
    # -9999 is data now: it is the low end of the stretch, so every real value is pushed up the scale
    real = (band != target) & (band != -9999)
    assert (rgb[band == -9999] == 0).all() and rgb[real].min() > 100


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "RGBA", "LA"])
@pytest.mark.parametrize("fmt", ["png", "tif"])
def test_eight_bit_pictures_exactly_as_pil(tmp_path, mode, fmt):
    src = Image.fromarray(RNG.integers(0, 256, (24, 36, 3), dtype=np.uint8)).convert(mode)
    path = tmp_path / f"a.{fmt}"
    src.save(path)
    expect = np.asarray(Image.open(path).convert("RGB"))
    got = imagery.load_image(path)
    assert got.mode == "RGB" and (np.asarray(got) == expect).all()
    assert (np.asarray(data.load_image(str(path))) == expect).all()


def test_jpeg_exactly_as_pil(tmp_path):
    path = tmp_path / "a.jpg"
    Image.fromarray(RNG.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path, quality=80)
    assert (np.asarray(imagery.load_image(path)) == np.asarray(Image.open(path).convert("RGB"))).all()


def test_eight_bit_options_select_and_stretch(tmp_path):
    arr = RNG.integers(100, 140, (20, 20, 4)).astype(np.uint8)
    path = tmp_path / "rgbn8.tif"
    tifffile.imwrite(path, arr, photometric="minisblack", planarconfig="contig")
    picked = np.asarray(imagery.load_image(path, bands=(4, 1, 2)))
    assert (picked == arr[..., [3, 0, 1]]).all()  # 8-bit: chosen, not stretched
    stretched = np.asarray(imagery.load_image(path, bands=(4, 1, 2), stretch=(0, 100)))
    assert stretched.min() == 0 and stretched.max() == 255


def test_sixteen_bit_grey_png_is_stretched(tmp_path):
    arr = (RNG.integers(1000, 3000, (30, 30))).astype(np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(arr).save(path)
    assert not_binary(np.asarray(imagery.load_image(path)), np.ones((30, 30), bool))


def truncate(path):
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def write_record(tmp_path, image):
    rec = {
        "id": "r1",
        "task": "caption",
        "images": [image],
        "question": "Describe the image.",
        "answer": "a field",
    }
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(rec) + "\n")
    return path


@pytest.mark.parametrize("name", ["a.png", "a.jpg", "a.tif"])
def test_truncated_file_fails_validation_with_file_line(tmp_path, name):
    path = tmp_path / name
    if name.endswith(".tif"):
        tifffile.imwrite(path, RNG.integers(0, 9000, (64, 64)).astype(np.uint16))
    else:
        Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    jsonl = write_record(tmp_path, name)
    assert data.load_records(jsonl)[0].image_sizes == [(64, 64)]
    truncate(path)
    with pytest.raises(data.RecordError, match=rf"{jsonl}:1: field 'images': unreadable image"):
        data.load_records(jsonl)
    assert data.load_records(jsonl, skip_bad=True) == []


def test_image_size_cache_follows_rewrites(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGB", (10, 20)).save(path)
    assert imagery.image_size(path) == (10, 20)
    Image.new("RGB", (30, 20)).save(path)
    os.utime(path, ns=(1, 10**18))  # a different mtime even on coarse clocks
    assert imagery.image_size(path) == (30, 20)


def test_options_from_meta_and_flags():
    assert imagery.options_from_meta({"bands": [4, 3, 2], "nodata": -9999, "dataset": "x"}) == {
        "bands": (4, 3, 2),
        "nodata": -9999.0,
    }
    assert imagery.options_from_meta(None) == {}
    for meta, field in [
        ({"bands": [4, 3]}, "meta.bands"),
        ({"stretch": [98, 2]}, "meta.stretch"),
        ({"nodata": "none"}, "meta.nodata"),
        ({"bands": [0]}, "meta.bands"),
    ]:
        with pytest.raises(imagery.ImageError, match=field):
            imagery.options_from_meta(meta)
    parser = argparse.ArgumentParser()
    add_imagery_flags(parser)
    args = parser.parse_args(["--bands", "5,4,3", "--stretch", "1,99", "--nodata", "0"])
    assert imagery.options_from_args(args) == {"bands": (5, 4, 3), "stretch": (1.0, 99.0), "nodata": 0.0}
    assert imagery.options_from_args(parser.parse_args([])) == {}


def test_data_load_image_reads_geotiff(tmp_path):
    path = tmp_path / "landsat.tif"
    landsat_band(path)
    img = data.load_image(str(path), "x.jsonl:1")
    assert img.mode == "RGB" and img.size == (80, 60)
    assert not_binary(np.asarray(img), np.asarray(img)[..., 0] > 0)


def test_a_band_flag_beyond_the_file_is_a_data_error_at_load(tmp_path):
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "a.png")
    rec = {
        "id": "a",
        "task": "classification",
        "images": ["a.png"],
        "question": "Which scene?",
        "answer": "forest",
    }
    (tmp_path / "d.jsonl").write_text(json.dumps(rec) + "\n")
    assert load_data(tmp_path / "d.jsonl", "--data", image_options={"bands": (3, 2, 1)})[0].meta["bands"] == (
        3,
        2,
        1,
    )
    with pytest.raises(SystemExit, match=r"d\.jsonl:1: .*\(4, 3, 2\).* 3 band"):
        load_data(tmp_path / "d.jsonl", "--data", image_options={"bands": (4, 3, 2)})


@pytest.mark.parametrize("name", ["a.png", "a.jpg"])
def test_a_truncated_image_leaves_no_file_open(tmp_path, name):
    path = tmp_path / name
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    truncate(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with pytest.raises(imagery.ImageError):
            imagery._open_pil(str(path))
        gc.collect()  # a file left open is closed here, with a ResourceWarning
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
