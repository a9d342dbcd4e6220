"""Bad input on real files: unreadable and malicious images given to `sslray data prepare`, unusual but
valid images (CMYK, 16-bit, grayscale), and prepared folders whose Parquet shards have the wrong schema."""

from __future__ import annotations

import io
import itertools
import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from sslray.cli import main
from sslray.data.augment import decode_images
from sslray.data.pipeline import open_prepared
from sslray.data.shards import MAX_PIXELS, ShardOptions, prepare
from sslray.errors import UserError

from .samples import (
    dds_with_unknown_pixel_format,
    encode,
    pattern,
    png_with_bad_idat_crc,
    png_with_ihdr_byte,
    raw_png,
    spider_with_bad_header,
)
from .test_prepare import read_split

TOO_LARGE = f"over the limit of {MAX_PIXELS:,}"
QUIET = ShardOptions(workers=1, log=lambda msg: None)  # one decode process, no progress lines


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real JPEG whose frame header (SOF0) is patched to claim another size."""
    data = bytearray(encode(pattern(16, 16, 3, 0), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def bilevel_bomb(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG: ~10 KB on disk, width*height bytes once PIL decodes it."""
    return raw_png(width, height, 1, 0, itertools.repeat(bytes((width + 7) // 8), height))


# file name -> (contents, a phrase its skip reason must contain)
BAD_IMAGES = {
    "empty.png": (b"", "empty (0 bytes)"),
    "garbage.jpg": (b"this is not an image at all", "not an image: no known image format"),
    "notes.png": ("a text file with an image suffix\n" * 20, "not an image: no known image format"),
    "zero_width.png": (raw_png(0, 16, 8, 0, []), "not an image"),
    "truncated.jpg": (encode(pattern(64, 64, 3, 8), "JPEG")[:300], "corrupt or truncated image data"),
    "truncated.png": (encode(pattern(64, 64, 3, 8))[:200], "corrupt or truncated image data"),
    # Formats PIL identifies by content whatever the suffix; their plugins raise other exception types.
    "texture.png": (dds_with_unknown_pixel_format(), "corrupt or truncated image data (NotImplementedError: "),
    "scan.tif": (spider_with_bad_header(), "corrupt or truncated image data (AttributeError: "),
    # Headers that claim 10 G and 4 G pixels (PIL itself refuses these inside Image.open) ...
    "claims_100000x100000.png": (raw_png(100_000, 100_000, 8, 2, [bytes(300)]),
                                 f"10,000,000,000 pixels is {TOO_LARGE}"),
    "claims_65000x65000.jpg": (jpeg_claiming(65_000, 65_000), f"4,225,000,000 pixels is {TOO_LARGE}"),
    # ... and valid bombs PIL would decode: 100 MP is only a warning for PIL, 72 MP not even that.
    "bomb_100mp.png": (bilevel_bomb(10_000, 10_000), f"10000x10000 = 100,000,000 pixels is {TOO_LARGE}"),
    "bomb_72mp.png": (bilevel_bomb(9_000, 8_000), f"9000x8000 = 72,000,000 pixels is {TOO_LARGE}"),
}


def write_bad_images(folder: Path) -> None:
    for name, (contents, _) in BAD_IMAGES.items():
        path = folder / name
        path.write_bytes(contents.encode() if isinstance(contents, str) else contents)
    (folder / "dangling.png").symlink_to(folder / "deleted-meanwhile.png")


def test_cli_skips_counts_and_lists_every_unreadable_image(tmp_path, capsys, recwarn):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "good.png").write_bytes(encode(pattern(12, 10, 3, 1)))
    (photos / "good.jpg").write_bytes(encode(pattern(20, 16, 3, 2), "JPEG"))
    write_bad_images(photos)
    expected = {name: phrase for name, (_, phrase) in BAD_IMAGES.items()}
    expected["dangling.png"] = "unreadable file (No such file or directory)"

    assert main(["data", "prepare", "folder", str(tmp_path / "out"), "--path", str(photos), "--workers", "1"]) == 0
    out, err = capsys.readouterr()
    assert "train: 2 images in 1 shard(s)" in out and f"(skipped {len(expected)})" in out
    assert "Traceback" not in out + err
    # The CLI lists the first 10 with their reasons and points at dataset.json for the rest.
    listed = [line for line in out.splitlines() if line.startswith("  skipped ")]
    assert len(listed) == 10 and f"... and {len(expected) - 10} more" in out
    for line in listed:
        name = Path(line.removeprefix("  skipped ").split(": ", 1)[0]).name
        assert expected[name] in line

    info = json.loads((tmp_path / "out" / "train" / "dataset.json").read_text())
    assert info["num_rows"] == 2 and info["skipped"] == len(expected)
    reasons = {Path(e["where"]).name: e["why"] for e in info["skipped_examples"]}
    assert reasons.keys() == expected.keys()
    for name, phrase in expected.items():
        assert phrase in reasons[name], (name, reasons[name])
        assert "\n" not in reasons[name] and "object at 0x" not in reasons[name]  # no repr of a BytesIO
    for name in ("claims_100000x100000.png", "bomb_100mp.png", "bomb_72mp.png", "claims_65000x65000.jpg"):
        assert "decompression bomb" in reasons[name] and "not decoded" in reasons[name]
    # Our limit is stricter than PIL's warning threshold, so PIL's warning would only be noise.
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]
    assert sorted(read_split(tmp_path / "out" / "train")["id"].to_pylist()) == ["good.jpg", "good.png"]


def test_decompression_bombs_are_refused_without_decoding(tmp_path):
    """Peak memory of a fresh process: preparing the bombs must not raise it, decoding one must."""
    bombs = tmp_path / "bombs"
    bombs.mkdir()
    for name in ("claims_100000x100000.png", "claims_65000x65000.jpg", "bomb_100mp.png", "bomb_72mp.png"):
        (bombs / name).write_bytes(BAD_IMAGES[name][0])
    (bombs / "good.png").write_bytes(encode(pattern(8, 8, 3, 0)))
    warm_up = tmp_path / "warm_up"
    warm_up.mkdir()
    (warm_up / "good.png").write_bytes(encode(pattern(8, 8, 3, 0)))
    script = textwrap.dedent("""
        import json, sys, warnings
        from PIL import Image
        from sslray.data.shards import ShardOptions, prepare

        def peak_mib():  # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the (big) pytest parent
            status = open("/proc/self/status").read()
            return int(status.split("VmHWM:")[1].split()[0]) / 1024

        bombs, warm_up, out = sys.argv[1:]
        # The first prepare of a process costs ~50 MiB once (Parquet writer, buffers): not what is measured.
        quiet = ShardOptions(workers=1, log=lambda msg: None)
        prepare("folder", out + "/warm_up", path=warm_up, options=quiet)
        start = peak_mib()
        (report,) = prepare("folder", out + "/bombs", path=bombs, options=quiet)
        after_prepare = peak_mib()
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        Image.open(bombs + "/bomb_100mp.png").load()  # what a decode costs: 1 byte per pixel
        print(json.dumps({"rows": report.rows, "skipped": len(report.skipped),
                          "prepare_mib": after_prepare - start, "decode_mib": peak_mib() - after_prepare}))
    """)
    result = subprocess.run([sys.executable, "-c", script, str(bombs), str(warm_up), str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout)
    assert (measured["rows"], measured["skipped"]) == (1, 4)
    assert measured["decode_mib"] > 80, measured  # the bomb is real: decoding it takes ~100 MiB
    assert measured["prepare_mib"] < 10, measured


def test_unusual_valid_images_are_kept_as_8bit_with_their_pixels(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    rgb = pattern(6, 7, 3, 1)
    gray = pattern(6, 7, 1, 2)
    cmyk = np.dstack([rgb, np.arange(42, dtype=np.uint8).reshape(6, 7) * 6])
    k = cmyk[..., 3:].astype(np.float64)
    cmyk_as_rgb = np.rint((255 - cmyk[..., :3]) * (255 - k) / 255).astype(np.uint8)  # PIL's (1-C)(1-K)

    Image.fromarray(cmyk, "CMYK").save(photos / "cmyk.tif")
    (photos / "cmyk.jpg").write_bytes(_cmyk_jpeg(cmyk))
    Image.fromarray(gray.astype(np.uint16) * 257).save(photos / "gray16.png")  # PIL mode I;16
    Image.fromarray(gray.astype(">u2") * 257).save(photos / "gray16_big_endian.tif")  # I;16B
    (photos / "rgb16.png").write_bytes(raw_png(7, 6, 16, 2, [(row.astype(">u2") * 257).tobytes() for row in rgb]))
    (photos / "gray.jpg").write_bytes(encode(gray, "JPEG"))
    (photos / "gray.png").write_bytes(encode(gray))
    (photos / "gray_alpha.png").write_bytes(encode(np.dstack([gray, np.full_like(gray, 9)])))
    Image.fromarray(rgb).quantize(colors=256).save(photos / "palette.gif")
    palette_rgb = np.asarray(Image.open(photos / "palette.gif").convert("RGB"))

    (report,) = prepare("folder", tmp_path / "out", path=str(photos), options=ShardOptions(workers=1))
    assert report.skipped == [] and report.rows == 9
    table = read_split(tmp_path / "out" / "train")
    stored = dict(zip(table["id"].to_pylist(), table["image"].to_pylist()))
    expected = {  # id -> (mode, exact pixels or None for lossy JPEG, kept byte for byte or None: either)
        "cmyk.tif": ("RGB", cmyk_as_rgb, False),
        "cmyk.jpg": ("RGB", None, False),
        "gray16.png": ("L", gray, False),
        "gray16_big_endian.tif": ("L", gray, False),
        "rgb16.png": ("RGB", rgb, False),
        "gray.jpg": ("L", None, True),
        "gray.png": ("L", gray, None),  # rewritten by PIL (see the last test): maybe the same bytes
        "gray_alpha.png": ("L", None, False),  # composited on white: checked below
        "palette.gif": ("RGB", palette_rgb, False),
    }
    for image_id, (mode, pixels, kept) in expected.items():
        data = stored[image_id]
        with Image.open(io.BytesIO(data)) as img:
            assert (img.format in ("PNG", "JPEG"), img.mode) == (True, mode), image_id
            decoded = np.asarray(img)
        if kept is not None:
            assert (data == (photos / image_id).read_bytes()) is kept, image_id
        # What training sees: torchvision's decoder must give the same uint8 pixels.
        views, _ = decode_images(np.array([data], dtype=object), 3 if mode == "RGB" else 1, 1024)
        assert views.dtype == torch.uint8, image_id
        trained = views[0].permute(1, 2, 0).numpy().squeeze(-1 if mode == "L" else ())
        np.testing.assert_array_equal(trained, decoded, err_msg=image_id)
        if pixels is not None:
            np.testing.assert_array_equal(decoded, pixels, err_msg=image_id)
    with Image.open(io.BytesIO(stored["gray_alpha.png"])) as img:  # alpha 9/255 over white: out = a*g + (1-a)*255
        on_white = 255 - (255 - gray.astype(float)) * 9 / 255
        np.testing.assert_allclose(np.asarray(img), on_white, atol=1)
    assert report.composited == 1
    with Image.open(io.BytesIO(stored["cmyk.jpg"])) as img:  # lossy, but the colours must survive
        assert np.abs(np.asarray(img).astype(int) - cmyk_as_rgb).mean() < 12


def _cmyk_jpeg(cmyk: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(cmyk, "CMYK").save(buf, format="JPEG", quality=95)
    return buf.getvalue()


# ------------------------------------------------------------------ prepared shards with the wrong schema


@pytest.fixture
def prepared_split(tmp_path) -> Path:
    photos = tmp_path / "photos"
    for c in ("a", "b"):
        (photos / c).mkdir(parents=True)
        for i in range(3):
            (photos / c / f"{i}.png").write_bytes(encode(pattern(8, 8, 3, i)))
    prepare("folder", tmp_path / "prepared", path=str(photos), options=QUIET)
    split = tmp_path / "prepared" / "train"
    assert open_prepared(str(split)).num_rows == 6  # the intact split opens
    return split


PNG = encode(pattern(8, 8, 3, 9))
WRONG_SCHEMAS = {  # name -> (table, phrase the error must contain)
    "image_as_string": (pa.table({"image": ["abc"], "label": [0], "id": ["x"]}),
                        "column 'image' has type string; expected binary"),
    "image_missing": (pa.table({"pixels": [PNG], "label": [0], "id": ["x"]}), "missing column 'image'"),
    "image_as_hf_struct": (pa.table({"image": [{"bytes": PNG, "path": "x.png"}], "label": [0], "id": ["x"]}),
                           "column 'image' has type struct"),
    "label_as_float": (pa.table({"image": [PNG], "label": [0.5], "id": ["x"]}),
                       "column 'label' has type double; expected integer"),
    "label_missing": (pa.table({"image": [PNG], "id": ["x"]}), "missing column 'label'"),
    "id_as_int": (pa.table({"image": [PNG], "label": [0], "id": [7]}), "column 'id' has type int64; expected string"),
}


@pytest.mark.parametrize("labels, type_name", [(["cat", "dog"], "string"), ([0.5, 1.0], "double")])
def test_parquet_source_with_non_integer_labels_exits_2_naming_file_and_column(tmp_path, capsys, labels, type_name):
    source = tmp_path / "hf.parquet"
    pq.write_table(pa.table({"image": [PNG, PNG], "label": labels}), source)
    argv = ["data", "prepare", "parquet", str(tmp_path / "out"), "--path", str(source), "--workers", "1"]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "Traceback" not in out + err
    assert f"{source}: column 'label' has type {type_name}; expected integer class indices" in err
    assert not (tmp_path / "out" / "train").exists()
    assert main([*argv, "--label-column", ""]) == 0  # the way out the message names: no labels
    assert read_split(tmp_path / "out" / "train")["label"].null_count == 2


@pytest.mark.parametrize("name", WRONG_SCHEMAS)
def test_shard_with_wrong_schema_names_the_file_and_column(prepared_split, name):
    table, phrase = WRONG_SCHEMAS[name]
    pq.write_table(table, prepared_split / "part-00001.parquet")
    with pytest.raises(UserError) as err:
        open_prepared(str(prepared_split))
    assert f"shard {prepared_split / 'part-00001.parquet'}: " in str(err.value) and phrase in str(err.value)


@pytest.mark.parametrize("contents", ["empty", "truncated", "text"])
def test_shard_that_is_not_parquet_names_the_file(prepared_split, contents):
    good = (prepared_split / "part-00000.parquet").read_bytes()
    data = {"empty": b"", "truncated": good[: len(good) // 2], "text": b"id,label\n1,2\n"}[contents]
    (prepared_split / "part-00001.parquet").write_bytes(data)
    with pytest.raises(UserError, match=r"data\.path: shard .*part-00001\.parquet is not readable Parquet"):
        open_prepared(str(prepared_split))


@pytest.mark.parametrize("name", ["label_as_float", "image_missing"])
def test_train_cli_on_wrong_schema_exits_2_with_one_line(prepared_split, tmp_path, capsys, name):
    table, phrase = WRONG_SCHEMAS[name]
    pq.write_table(table, prepared_split / "part-00001.parquet")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(textwrap.dedent(f"""
        method: {{name: simclr}}
        backbone: {{in_chans: 3}}
        data: {{path: {json.dumps(str(prepared_split))}, channels: 3, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5],
               knn_bank: null, knn_query: null}}
        train: {{epochs: 1, batch_size: 2}}
    """))
    assert main(["train", str(recipe), "--out", str(tmp_path / "run")]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("sslray: error: ") and err.count("\n") == 1 and "Traceback" not in out + err
    assert "part-00001.parquet" in err and phrase in err
    assert not os.path.exists(tmp_path / "run" / "config.yaml")


def test_pngs_that_libpng_rejects_are_rewritten_so_training_can_decode_them(tmp_path):
    """PIL reads these PNGs, libpng (torchvision's decoder, in training) does not: it raises on an
    unknown IHDR compression method and crashes the process (SIGSEGV) on a bad IDAT CRC. The training
    decoder runs in a subprocess, so a crash fails this test instead of killing the session."""
    photos = tmp_path / "photos"
    photos.mkdir()
    gray = pattern(8, 8, 1, 3)
    (photos / "idat_bad_crc.png").write_bytes(png_with_bad_idat_crc(encode(gray)))
    # Compression method 1: PNG defines only 0; PIL ignores the field.
    (photos / "ihdr_unknown_compression.png").write_bytes(png_with_ihdr_byte(encode(gray), 26, 1))
    (report,) = prepare("folder", tmp_path / "out", path=str(photos), options=QUIET)
    assert report.rows == 2 and report.skipped == []

    script = textwrap.dedent("""
        import json, sys
        import numpy as np, pyarrow.parquet as pq
        from sslray.data.augment import decode_images

        table = pq.read_table(sys.argv[1])
        decoded = {}
        for image_id, data in zip(table["id"].to_pylist(), table["image"].to_pylist()):
            images, _ = decode_images(np.array([data], dtype=object), 1, 1024)
            decoded[image_id] = images[0, 0].tolist()
        print(json.dumps(decoded))
    """)
    shard = next((tmp_path / "out" / "train").glob("part-*.parquet"))
    result = subprocess.run([sys.executable, "-c", script, str(shard)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    for image_id, pixels in json.loads(result.stdout).items():
        np.testing.assert_array_equal(np.array(pixels, dtype=np.uint8), gray, err_msg=image_id)
