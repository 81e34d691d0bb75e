"""The model directory format: a manifest with format, version and a checksum per file.

A directory is read only when everything the manifest promises holds: our format, the one
version this embedrec reads, and every listed file present with the checksum it was written
with. Writes replace a model directory whole or not at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from embedrec.bundle import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    MAX_MANIFEST_BYTES,
    MODEL_FILES,
    BundleError,
    json_text,
    read_manifest,
    write_bundle,
)
from embedrec.data.atomic import replacing, write_atomic

FILES = {"weights.bin": b"\x00\x01\x02 weights", "ids.txt": "Wagen 1 ä\n".encode()}


def writers(files: dict[str, bytes] = FILES):
    return {name: (lambda path, data=data: path.write_bytes(data)) for name, data in files.items()}


def bundle(tmp_path: Path, name: str = "model", meta: dict | None = None) -> Path:
    return write_bundle(tmp_path / name, writers(), meta or {"model": "mf", "dim": 8})


def edit_manifest(directory: Path, change) -> None:
    manifest = json.loads((directory / MANIFEST).read_text())
    change(manifest)
    (directory / MANIFEST).write_text(json.dumps(manifest))


def test_round_trip_records_format_meta_and_a_sha256_per_file(tmp_path):
    directory = bundle(tmp_path, "sub/dir/model")  # parents are created
    assert directory == tmp_path / "sub/dir/model"
    assert sorted(p.name for p in directory.iterdir()) == sorted([MANIFEST, *FILES])
    manifest = read_manifest(directory)
    assert manifest["format"] == FORMAT == "embedrec-model"
    assert manifest["format_version"] == FORMAT_VERSION == 1
    assert manifest["model"] == "mf" and manifest["dim"] == 8
    assert manifest["files"] == {
        name: hashlib.sha256(data).hexdigest() for name, data in FILES.items()
    }
    for name, data in FILES.items():
        assert (directory / name).read_bytes() == data
    # the checksums are those of a file read in blocks: a file over one block reads the same
    big = b"x" * ((1 << 20) + 5)
    directory = write_bundle(tmp_path / "big", writers({"big.bin": big}), {})
    assert read_manifest(directory)["files"] == {"big.bin": hashlib.sha256(big).hexdigest()}


def test_meta_cannot_replace_the_checksums(tmp_path):
    directory = write_bundle(tmp_path / "model", writers(), {"files": {}})
    assert set(read_manifest(directory)["files"]) == set(FILES)


@pytest.mark.parametrize("version", [FORMAT_VERSION + 1, 0, "1", None])
def test_another_format_version_is_refused(tmp_path, version):
    directory = bundle(tmp_path)
    edit_manifest(directory, lambda m: m.update(format_version=version))
    with pytest.raises(BundleError, match="format version") as error:
        read_manifest(directory)
    message = str(error.value)
    assert f"model format version {version} is not supported" in message
    assert str(directory) in message and f"reads version {FORMAT_VERSION}" in message
    assert "retrain" in message


def test_a_manifest_without_a_format_version_is_refused(tmp_path):
    directory = bundle(tmp_path)
    edit_manifest(directory, lambda m: m.pop("format_version"))
    with pytest.raises(BundleError, match="format version None is not supported"):
        read_manifest(directory)


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m.pop("files"),
        lambda m: m.update(files={}),
        lambda m: m.update(files=None),
        lambda m: m.update(files=["weights.bin"]),
    ],
    ids=["no files", "empty files", "files null", "files a list"],
)
def test_a_manifest_without_checksums_is_refused(tmp_path, change):
    # it would verify nothing: a directory whose files were swapped would load
    directory = bundle(tmp_path)
    edit_manifest(directory, change)
    (directory / "weights.bin").write_bytes(b"swapped")
    with pytest.raises(BundleError, match="lists no files") as error:
        read_manifest(directory)
    assert str(directory) in str(error.value)


def test_a_changed_file_fails_its_checksum(tmp_path):
    directory = bundle(tmp_path)
    data = bytearray((directory / "weights.bin").read_bytes())
    data[3] ^= 0x01  # one bit
    (directory / "weights.bin").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"file weights\.bin is corrupt \(checksum mismatch\)"):
        read_manifest(directory)


def test_a_changed_checksum_is_a_mismatch_too(tmp_path):
    directory = bundle(tmp_path)
    edit_manifest(directory, lambda m: m["files"].update({"ids.txt": "0" * 64}))
    with pytest.raises(BundleError, match=r"file ids\.txt is corrupt"):
        read_manifest(directory)


def test_a_missing_file_is_named(tmp_path):
    directory = bundle(tmp_path)
    (directory / "ids.txt").unlink()
    with pytest.raises(BundleError, match=r"file ids\.txt is missing \(truncated copy\?\)") as e:
        read_manifest(directory)
    assert str(e.value).startswith(f"{directory}: ")


def test_foreign_and_broken_manifests(tmp_path):
    directory = bundle(tmp_path)
    edit_manifest(directory, lambda m: m.update(format="another-model"))
    with pytest.raises(BundleError, match="not an embedrec model directory .foreign manifest."):
        read_manifest(directory)
    (directory / MANIFEST).write_text("[1, 2]")  # JSON, but not an object
    with pytest.raises(BundleError, match="foreign manifest"):
        read_manifest(directory)
    (directory / MANIFEST).write_text('{"format": "embedrec-model", ')
    with pytest.raises(BundleError, match="corrupt manifest") as error:
        read_manifest(directory)
    assert str(directory / MANIFEST) in str(error.value)
    (directory / MANIFEST).write_bytes(b"\xff\xfe\x00not text")
    with pytest.raises(BundleError, match="corrupt manifest"):
        read_manifest(directory)


def test_absent_directories_and_files(tmp_path):
    with pytest.raises(BundleError, match="no such model directory"):
        read_manifest(tmp_path / "absent")
    a_file = tmp_path / "model.bin"
    a_file.write_bytes(b"")
    with pytest.raises(BundleError, match="model.bin: a file, not a model directory"):
        read_manifest(a_file)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BundleError, match=r"not an embedrec model directory \(no manifest\.json\)"):
        read_manifest(empty)


def test_rewriting_replaces_the_model_whole_and_leaves_no_temporaries(tmp_path):
    bundle(tmp_path)
    directory = write_bundle(
        tmp_path / "model", writers({"other.bin": b"new"}), {"model": "hybrid"}
    )
    assert sorted(p.name for p in directory.iterdir()) == [MANIFEST, "other.bin"]
    assert read_manifest(directory)["model"] == "hybrid"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_an_empty_directory_may_become_a_model(tmp_path):
    (tmp_path / "model").mkdir()
    directory = bundle(tmp_path)
    assert read_manifest(directory)["model"] == "mf"


def test_a_directory_that_is_not_a_model_is_never_replaced(tmp_path):
    target = tmp_path / "precious"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(BundleError, match="exists and is not a model directory; not replacing"):
        write_bundle(target, writers(), {})
    assert [p.name for p in target.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious"]  # staging removed


def test_a_file_where_the_model_goes_is_named_and_kept(tmp_path):
    target = tmp_path / "model"
    target.write_text("keep me")
    with pytest.raises(BundleError, match="is a file, not a model directory; not replacing"):
        write_bundle(target, writers(), {})
    assert target.read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # nothing staged


def test_a_failing_writer_leaves_the_old_model_and_no_temporaries(tmp_path):
    directory = bundle(tmp_path)

    def fail(path: Path) -> None:
        path.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_bundle(directory, {"weights.bin": fail}, {"model": "hybrid"})
    assert read_manifest(directory)["model"] == "mf"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_json_text_writes_numpy_numbers_as_numbers_and_the_rest_as_text(tmp_path):
    value = {"dim": np.int64(32), "lr": np.float32(0.5), "path": tmp_path, "ok": True}
    text = json_text(value)
    assert json.loads(text) == {"dim": 32, "lr": 0.5, "path": str(tmp_path), "ok": True}
    assert text.startswith('{\n  "dim": 32,')  # indented
    directory = write_bundle(tmp_path / "model", writers(), {"dim": np.int64(32)})
    assert read_manifest(directory)["dim"] == 32


# ---------------------------------------------------------------------- a hostile manifest
def checksum(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("name", ["../secret.txt", "/SECRET", "sub/weights.bin", "..", MANIFEST])
def test_a_manifest_naming_a_path_is_refused_and_the_path_never_read(tmp_path, name):
    directory = bundle(tmp_path)
    secret = b"not the model's"
    (tmp_path / "secret.txt").write_bytes(secret)
    target = str(tmp_path / "secret.txt") if name == "/SECRET" else name
    edit_manifest(directory, lambda m: m["files"].update({target: checksum(secret)}))
    with pytest.raises(BundleError, match="not a file of the model") as error:
        read_manifest(directory)
    assert str(directory) in str(error.value)


def test_a_model_directory_lists_exactly_the_model_files(tmp_path):
    files = {name: name.encode() for name in sorted(MODEL_FILES)}
    directory = write_bundle(tmp_path / "model", writers(files), {"model": "mf"})
    assert set(read_manifest(directory, MODEL_FILES)["files"]) == MODEL_FILES
    (directory / "extra.bin").write_bytes(b"x")
    edit_manifest(directory, lambda m: m["files"].update({"extra.bin": checksum(b"x")}))
    with pytest.raises(BundleError, match=r"lists 'extra.bin' and omits nothing; a model"):
        read_manifest(directory, MODEL_FILES)
    edit_manifest(directory, lambda m: [m["files"].pop(n) for n in ("extra.bin", "users.parquet")])
    with pytest.raises(BundleError, match=r"omits 'users.parquet'"):
        read_manifest(directory, MODEL_FILES)


def test_checksums_must_be_sha256_digests(tmp_path):
    directory = bundle(tmp_path)
    edit_manifest(directory, lambda m: m["files"].update({"ids.txt": None}))
    with pytest.raises(BundleError, match="no sha256 checksum for ids.txt"):
        read_manifest(directory)


def test_a_symbolic_link_is_not_followed(tmp_path):
    directory = bundle(tmp_path)
    outside = tmp_path / "outside.bin"
    outside.write_bytes(FILES["weights.bin"])  # the very bytes the checksum expects
    (directory / "weights.bin").unlink()
    (directory / "weights.bin").symlink_to(outside)
    with pytest.raises(BundleError, match=r"weights\.bin is not a regular file"):
        read_manifest(directory)
    (directory / MANIFEST).rename(tmp_path / "manifest-elsewhere.json")
    (directory / MANIFEST).symlink_to(tmp_path / "manifest-elsewhere.json")
    with pytest.raises(BundleError, match=r"manifest\.json is not a regular file"):
        read_manifest(directory)


@pytest.mark.parametrize("name", ["weights.bin", MANIFEST])
def test_a_fifo_is_refused_at_once_not_waited_on(tmp_path, name):
    directory = bundle(tmp_path)
    (directory / name).unlink()
    os.mkfifo(directory / name)  # opening it to read would wait for a writer forever
    outcome: list[BaseException] = []
    reader = threading.Thread(target=lambda: outcome.append(_error_of(read_manifest, directory)))
    reader.daemon = True  # without the check it never returns: the test must still end
    reader.start()
    reader.join(30)
    assert not reader.is_alive(), "read_manifest waits on a FIFO"
    assert isinstance(outcome[0], BundleError)
    assert f"{name} is not a regular file" in str(outcome[0])


def test_a_huge_manifest_is_not_read_into_memory(tmp_path):
    directory = bundle(tmp_path)
    with open(directory / MANIFEST, "ab") as handle:
        handle.write(b" " * (MAX_MANIFEST_BYTES + 1))
    with pytest.raises(BundleError, match="corrupt manifest .over 1048576 bytes."):
        read_manifest(directory)


def _error_of(function, *args) -> BaseException | None:
    try:
        function(*args)
    except BaseException as exc:  # noqa: BLE001 - handed to the test thread to assert on
        return exc
    return None


KILLED_WRITER = """
import os, signal, sys
from embedrec.data.atomic import replace_directory

def write(staging):
    (staging / "weights.bin").write_bytes(b"half")
    os.kill(os.getpid(), signal.SIGKILL)

replace_directory(sys.argv[1], write)
"""


def test_a_killed_writers_staging_folder_goes_with_the_next_save_a_live_writers_stays(tmp_path):
    directory = bundle(tmp_path)
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(directory)], capture_output=True, timeout=60
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (left,) = [p for p in tmp_path.iterdir() if p.name != "model"]
    assert (left / "weights.bin").read_bytes() == b"half"
    # another save to the same place, still writing when the next one starts
    started, finish = threading.Event(), threading.Event()

    def slow(path: Path) -> None:
        path.write_bytes(b"slow")
        started.set()
        finish.wait(30)

    writer = threading.Thread(target=write_bundle, args=(directory, {"a": slow}, {}))
    writer.start()
    try:
        assert started.wait(30)
        (live,) = [p for p in tmp_path.iterdir() if p.name not in ("model", left.name)]
        bundle(tmp_path, meta={"model": "hybrid"})
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model", live.name])
        assert read_manifest(directory)["model"] == "hybrid"
    finally:
        finish.set()
        writer.join()
    assert read_manifest(directory)["files"] == {"a": checksum(b"slow")}
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


KILLED_FILE_WRITER = """
import os, signal, sys
from embedrec.data.atomic import write_atomic

def write(temporary):
    temporary.write_bytes(b"half")
    os.kill(os.getpid(), signal.SIGKILL)

write_atomic(sys.argv[1], write)
"""


def test_a_killed_writers_temporary_file_goes_with_the_next_write_a_live_writers_stays(
    tmp_path,
):
    target = tmp_path / "table.parquet"
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_FILE_WRITER, str(target)], capture_output=True, timeout=60
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (left,) = tmp_path.iterdir()
    assert left.name.startswith(".table.parquet.") and left.name.endswith(".parquet")
    assert left.read_bytes() == b"half"
    other = tmp_path / "other.parquet"  # another target's write leaves it alone
    write_atomic(other, lambda path: path.write_bytes(b"other"))
    assert left.exists()
    with replacing(target) as (live,):  # this process, still writing, is alive
        live.write_bytes(b"live")
        write_atomic(target, lambda path: path.write_bytes(b"new"))
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [live.name, "other.parquet", "table.parquet"]
        )
    assert target.read_bytes() == b"live"
