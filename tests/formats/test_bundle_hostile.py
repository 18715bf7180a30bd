"""`mmat export --bundle DIR` against a careless user and hostile files: someone's folder, the run
folder itself, a file, a FIFO or a link given as DIR; a kill -9 mid-bundle; two exports racing for
one folder; image blobs gone, changed or forged; odd names; and the manifest checked after copying."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from mmat_core.cli import main
from mmat_core.errors import OutputDirError
from mmat_core.exporter import BUNDLE_MANIFEST, bundle_run, verify_bundle
from mmat_core.images import sha256_bytes
from mmat_core.models import Trace
from mmat_core.store import RunStore


def _rows(bundle: Path) -> list[dict]:
    return [json.loads(line) for line in (bundle / "ms_swift_rr.jsonl").read_text(encoding="utf-8").splitlines()]


def _edit_images(run: Path, edit: Callable[[Trace], None]) -> None:
    store = RunStore.open(run)
    traces = [Trace.model_validate_json(raw) for raw in store.trace_json()]
    for seq, trace in enumerate(traces, 1):
        edit(trace)
        store.add_trace(seq, trace)
    store.flush()
    store.close()


# ---- the folder given as --bundle ----------------------------------------------------------------

def test_bundle_refuses_a_folder_of_someone_elses_files_naming_them(image_run: Path, tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "thesis.tex").write_text("mine")
    with pytest.raises(OutputDirError, match=r"thesis\.tex.*--force"):
        bundle_run(image_run, ["ms_swift"], tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["thesis.tex"]


def test_bundle_with_force_writes_beside_foreign_files_and_keeps_them(image_run: Path, tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "thesis.tex").write_text("mine")
    bundle_run(image_run, ["ms_swift"], tmp_path / "b", force=True)
    assert (tmp_path / "b" / "thesis.tex").read_text() == "mine"
    assert verify_bundle(tmp_path / "b") == []


def test_bundle_replaces_its_own_earlier_bundle_only_with_force(image_run: Path, tmp_path: Path) -> None:
    bundle_run(image_run, ["ms_swift"], tmp_path / "b")
    with pytest.raises(OutputDirError, match="already holds a bundle"):
        bundle_run(image_run, ["ms_swift"], tmp_path / "b")
    bundle_run(image_run, ["llava"], tmp_path / "b", force=True)
    manifest = json.loads((tmp_path / "b" / BUNDLE_MANIFEST).read_text())
    assert "llava" in manifest["formats"] and "ms_swift" not in manifest["formats"]
    assert not (tmp_path / "b" / "ms_swift_rr.jsonl").exists() and verify_bundle(tmp_path / "b") == []


@pytest.mark.parametrize("where", [".", "inside"])
def test_bundle_refuses_the_run_folder_or_a_folder_inside_it(image_run: Path, where: str) -> None:
    with pytest.raises(OutputDirError, match="run folder"):
        bundle_run(image_run, ["ms_swift"], image_run / where, force=True)


def test_bundle_refuses_a_folder_that_holds_the_run(image_run: Path, tmp_path: Path) -> None:
    with pytest.raises(OutputDirError, match="run folder"):
        bundle_run(image_run, ["ms_swift"], tmp_path, force=True)


def test_bundle_refuses_a_file(image_run: Path, tmp_path: Path) -> None:
    (tmp_path / "b").write_text("x")
    with pytest.raises(OutputDirError, match="is a file"):
        bundle_run(image_run, ["ms_swift"], tmp_path / "b", force=True)


def test_bundle_refuses_a_fifo(image_run: Path, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "b")
    with pytest.raises(OutputDirError, match="FIFO"):
        bundle_run(image_run, ["ms_swift"], tmp_path / "b", force=True)


def test_bundle_refuses_a_symbolic_link_naming_where_it_points(image_run: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "b").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OutputDirError, match="symbolic link to .*elsewhere"):
        bundle_run(image_run, ["ms_swift"], tmp_path / "b", force=True)
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_export_command_refuses_a_foreign_bundle_folder_in_one_line(image_run: Path, tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("x")
    done = subprocess.run([sys.executable, "-m", "mmat_core", "export", str(image_run), "-f", "ms_swift", "--bundle",
                           str(tmp_path / "b")], check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "notes.txt" in done.stderr and "Traceback" not in done.stderr, done.stderr


# ---- a bundle is complete or absent --------------------------------------------------------------

KILL_MIDWAY = """
import os, sys
from mmat_core import exporter
copies = 0
original = exporter._Bundler._copy
def copy_then_die(self, image):
    global copies
    copies += 1
    if copies == 3:
        os.kill(os.getpid(), 9)
    return original(self, image)
exporter._Bundler._copy = copy_then_die
exporter.bundle_run(sys.argv[1], ["ms_swift", "llava"], sys.argv[2])
"""


def test_bundle_killed_midway_leaves_nothing_at_the_target_and_no_manifest(image_run: Path, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", KILL_MIDWAY, str(image_run), str(tmp_path / "out" / "b")],
                          check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, done.stderr[-2000:]
    assert not (tmp_path / "out" / "b").exists()
    assert list((tmp_path / "out").rglob(BUNDLE_MANIFEST)) == []
    # The next export is not refused for the leftover, and clears it.
    bundle_run(image_run, ["ms_swift"], tmp_path / "out" / "b")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b"]


def test_two_bundles_into_one_folder_at_once_give_one_bundle_and_one_refusal(image_run: Path, tmp_path: Path) -> None:
    script = "import sys; from mmat_core.exporter import bundle_run; bundle_run(sys.argv[1], ['ms_swift', 'llava'], sys.argv[2])"
    runs = [subprocess.Popen([sys.executable, "-c", script, str(image_run), str(tmp_path / "b")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    assert sorted(code for code, _ in outcomes) == [0, 1], outcomes
    assert any("OutputDirError" in err for code, err in outcomes if code == 1)
    assert verify_bundle(tmp_path / "b") == []


# ---- the run's images ----------------------------------------------------------------------------

def test_bundle_leaves_out_a_trace_whose_image_changed_since_the_run(image_run: Path, tmp_path: Path) -> None:
    victim = next((tmp_path / "source_images").glob("infoseek*"))
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")
    result = bundle_run(image_run, ["ms_swift"], tmp_path / "b")
    assert [(r.row, r.reason) for r in result.rejected] == [("infoseek/val/oven_04", "image_changed")]
    assert len(_rows(tmp_path / "b")) == 2 and verify_bundle(tmp_path / "b") == []


def test_bundle_leaves_out_a_trace_whose_blob_in_the_run_store_is_corrupt(image_run: Path, tmp_path: Path) -> None:
    from mmat_core.images import ImageStore

    blobs = ImageStore(image_run / "images")

    def to_blob(trace: Trace) -> None:
        for ref in trace.sample.images:
            blobs.put(Path(ref.path).read_bytes(), ".png")
            ref.path = None

    _edit_images(image_run, to_blob)
    corrupt = min((image_run / "images").rglob("*.png"))
    corrupt.write_bytes(b"not the image")
    result = bundle_run(image_run, ["ms_swift"], tmp_path / "b")
    assert [r.reason for r in result.rejected] == ["image_changed"]
    stored = {p.name for p in (tmp_path / "b" / "images").rglob("*.png")}
    assert corrupt.name not in stored and verify_bundle(tmp_path / "b") == []


def test_bundle_stores_the_same_image_content_once_under_different_names(image_run: Path, tmp_path: Path) -> None:
    first = min((tmp_path / "source_images").glob("*.png"))

    def same_bytes(trace: Trace) -> None:
        for k, ref in enumerate(trace.sample.images):
            twin = tmp_path / "source_images" / f"copy of {trace.id.replace('/', '_')}_{k}.PNG"
            shutil.copyfile(first, twin)
            ref.path, ref.sha256 = str(twin), sha256_bytes(first.read_bytes())

    _edit_images(image_run, same_bytes)
    bundle_run(image_run, ["ms_swift"], tmp_path / "b")
    assert len(list((tmp_path / "b" / "images").rglob("*.*"))) == 1
    assert len({p for row in _rows(tmp_path / "b") for p in row["images"]}) == 1


def test_bundle_names_images_by_hash_whatever_the_source_name(image_run: Path, tmp_path: Path) -> None:
    odd = "é 图 " + "x" * 200 + ".p\nng" + "." + "q" * 240

    def rename(trace: Trace) -> None:
        if trace.status == "dropped":  # shares the first trace's images
            return
        for k, ref in enumerate(trace.sample.images):
            name = f"{k}{trace.id.replace('/', '_')[:3]}{odd}".encode()[:250].decode("utf-8", "ignore")
            target = tmp_path / "source_images" / name
            Path(ref.path).rename(target)
            ref.path, ref.format = str(target), None

    _edit_images(image_run, rename)
    bundle_run(image_run, ["ms_swift"], tmp_path / "ünïcode bündle")
    names = [p.name for p in (tmp_path / "ünïcode bündle" / "images").rglob("*") if p.is_file()]
    assert len(names) == 4 and all(len(n) <= 64 + 9 and n.isascii() and "\n" not in n for n in names)


def test_bundle_does_not_copy_a_file_that_a_row_reaches_with_dotdot(image_run: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"private key material")

    def escape(trace: Trace) -> None:
        if trace.sample.images:
            trace.sample.images[0].path = str(image_run / ".." / ".." / tmp_path.name / "secret.png")

    _edit_images(image_run, escape)
    result = bundle_run(image_run, ["ms_swift"], tmp_path / "b")
    assert {r.reason for r in result.rejected} == {"image_changed"}
    assert all(b"private key" not in p.read_bytes() for p in (tmp_path / "b").rglob("*") if p.is_file())


# ---- the manifest checks the bundle after a copy -------------------------------------------------

def test_verify_bundle_passes_a_copied_bundle(image_run: Path, tmp_path: Path) -> None:
    bundle_run(image_run, ["ms_swift", "llava"], tmp_path / "b")
    shutil.copytree(tmp_path / "b", tmp_path / "copy")
    assert verify_bundle(tmp_path / "copy") == []


def test_verify_bundle_names_a_changed_a_missing_and_an_extra_file(image_run: Path, tmp_path: Path) -> None:
    bundle_run(image_run, ["ms_swift"], tmp_path / "b")
    image = next((tmp_path / "b" / "images").rglob("*.png"))
    image.write_bytes(image.read_bytes() + b"\0")
    (tmp_path / "b" / "ms_swift_rr.jsonl").unlink()
    (tmp_path / "b" / "stray.txt").write_text("x")
    problems = "\n".join(verify_bundle(tmp_path / "b"))
    assert image.name in problems and "ms_swift_rr.jsonl: missing" in problems and "stray.txt: not in the manifest" in problems


def test_verify_bundle_refuses_a_manifest_path_that_leaves_the_bundle(image_run: Path, tmp_path: Path) -> None:
    bundle_run(image_run, ["ms_swift"], tmp_path / "b")
    manifest = json.loads((tmp_path / "b" / BUNDLE_MANIFEST).read_text())
    manifest["files"].append({"path": "../../etc/passwd", "bytes": 1, "sha256": "0" * 64})
    (tmp_path / "b" / BUNDLE_MANIFEST).write_text(json.dumps(manifest))
    assert any("outside the bundle" in p for p in verify_bundle(tmp_path / "b"))


def test_verify_bundle_says_a_folder_without_manifest_is_no_bundle(tmp_path: Path) -> None:
    assert verify_bundle(tmp_path) == [f"{tmp_path / BUNDLE_MANIFEST}: missing: not a complete bundle"]


def test_export_verify_bundle_command_exits_1_on_a_damaged_bundle(image_run: Path, tmp_path: Path) -> None:
    bundle_run(image_run, ["ms_swift"], tmp_path / "b")
    ok = CliRunner().invoke(main, ["export", "--verify-bundle", str(tmp_path / "b")])
    assert ok.exit_code == 0 and "every file matches the manifest" in ok.output, ok.output
    (tmp_path / "b" / "README.md").write_text("edited")
    bad = CliRunner().invoke(main, ["export", "--verify-bundle", str(tmp_path / "b")])
    assert bad.exit_code == 1 and "README.md" in bad.output


def test_export_command_refuses_force_without_bundle(image_run: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["export", str(image_run), "-f", "ms_swift", "--out", str(tmp_path / "o"), "--force"])
    assert result.exit_code == 2 and "--force applies to --bundle" in result.output


def test_bundle_that_fails_midway_removes_its_partial_folder(tmp_path: Path) -> None:
    from mmat_core.errors import ConfigError

    RunStore.open(tmp_path / "bare_run").close()  # a store with no config: refused after the partial folder exists
    with pytest.raises(ConfigError, match="neither a config"):
        bundle_run(tmp_path / "bare_run", ["ms_swift"], tmp_path / "out" / "b")
    assert list((tmp_path / "out").iterdir()) == []
