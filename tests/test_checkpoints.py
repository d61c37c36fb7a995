"""Finding, downloading and safely loading checkpoints; the messages users see."""

import os
import pickle
from pathlib import Path

import pytest
import torch

from sam_block.errors import CheckpointCorruptError, CheckpointMissingError
from sam_block.runtime import checkpoints
from sam_block.runtime.checkpoints import download, load_state_dict, resolve_checkpoint
from sam_block.runtime.models import load_model
from sam_block.runtime.variants import Variant, get_variant
from tests.conftest import FileServer


@pytest.fixture
def empty_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SAM_BLOCK_CHECKPOINT_DIR", str(tmp_path))
    return tmp_path


def test_versions_map_to_official_file_names():
    assert {v: get_variant(v).filename for v in ["hiera_tiny", "hiera_small", "hiera_b_plus", "hiera_large"]} == {
        "hiera_tiny": "sam2.1_hiera_tiny.pt",
        "hiera_small": "sam2.1_hiera_small.pt",
        "hiera_b_plus": "sam2.1_hiera_base_plus.pt",
        "hiera_large": "sam2.1_hiera_large.pt",
    }
    assert get_variant("hiera_large").url.endswith("/sam2.1_hiera_large.pt")


def test_default_checkpoint_dir_is_the_user_cache(monkeypatch):
    monkeypatch.delenv("SAM_BLOCK_CHECKPOINT_DIR")
    assert checkpoints.checkpoint_dir() == Path("~/.cache/sam_block").expanduser()


def test_missing_checkpoint_offline_names_version_path_and_url(empty_dir):
    with pytest.raises(CheckpointMissingError) as error:
        resolve_checkpoint(get_variant("hiera_small"))
    message = str(error.value)
    assert "'hiera_small'" in message
    assert str(empty_dir / "sam2.1_hiera_small.pt") in message
    assert "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_small.pt" in message
    assert "SAM_BLOCK_OFFLINE=1" in message


@pytest.fixture
def server():
    """A loopback mirror: ``/t.pt`` serves what a test puts there, other paths 404."""
    with FileServer() as httpd:
        yield httpd, httpd.url


def test_missing_checkpoint_is_downloaded_atomically(server, empty_dir, monkeypatch, tiny_checkpoint):
    monkeypatch.delenv("SAM_BLOCK_OFFLINE")
    _, url = server
    httpd, url = server
    httpd.files["/t.pt"] = tiny_checkpoint.read_bytes()
    variant = Variant(
        name="hiera_tiny",
        config="configs/sam2.1/sam2.1_hiera_t.yaml",
        filename="sam2.1_hiera_tiny.pt",
        url=f"{url}/t.pt",
    )
    path = resolve_checkpoint(variant, progress=False)
    assert path == empty_dir / "sam2.1_hiera_tiny.pt"
    assert path.read_bytes() == httpd.files["/t.pt"]
    assert os.listdir(empty_dir) == ["sam2.1_hiera_tiny.pt"]
    model = load_model(variant, torch.device("cpu"))
    assert model.image_size == 1024


def test_interrupted_download_leaves_no_file_and_explains(server, empty_dir, monkeypatch):
    monkeypatch.delenv("SAM_BLOCK_OFFLINE")
    _, url = server
    httpd, url = server
    httpd.files["/t.pt"], httpd.truncate = b"x" * 4096, True
    variant = Variant(name="hiera_tiny", config="", filename="sam2.1_hiera_tiny.pt", url=f"{url}/t.pt")
    monkeypatch.setenv("SAM_BLOCK_DOWNLOAD_TIMEOUT", "5")
    with pytest.raises(CheckpointMissingError, match="downloading failed") as error:
        resolve_checkpoint(variant, progress=False)
    assert f"{url}/t.pt" in str(error.value)
    assert os.listdir(empty_dir) == []


def test_http_error_is_reported_with_the_url(server, empty_dir, monkeypatch):
    monkeypatch.delenv("SAM_BLOCK_OFFLINE")
    _, url = server
    variant = Variant(name="hiera_tiny", config="", filename="sam2.1_hiera_tiny.pt", url=f"{url}/missing.pt")
    with pytest.raises(CheckpointMissingError, match="404") as error:
        resolve_checkpoint(variant, progress=False)
    assert f"{url}/missing.pt" in str(error.value)
    assert os.listdir(empty_dir) == []


def test_download_keeps_an_existing_file_when_it_fails(server, tmp_path):
    _, url = server
    httpd, url = server
    httpd.files["/t.pt"], httpd.truncate = b"new" * 100, True
    target = tmp_path / "file.pt"
    target.write_bytes(b"old")
    with pytest.raises(IOError):
        download(f"{url}/t.pt", target, progress=False, timeout_s=5)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["file.pt"]


def test_truncated_checkpoint_names_the_file(tmp_path, tiny_checkpoint):
    broken = tmp_path / "sam2.1_hiera_tiny.pt"
    broken.write_bytes(tiny_checkpoint.read_bytes()[:100_000])
    with pytest.raises(CheckpointCorruptError, match="corrupt or truncated") as error:
        load_state_dict(broken)
    assert str(broken) in str(error.value)


def test_garbage_file_names_the_file(tmp_path):
    garbage = tmp_path / "sam2.1_hiera_tiny.pt"
    garbage.write_text("this is not a checkpoint")
    with pytest.raises(CheckpointCorruptError) as error:
        load_state_dict(garbage)
    assert str(garbage) in str(error.value)
    assert "Traceback" not in str(error.value)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/sam_block_pwned",))


def test_pickled_objects_are_refused_not_executed(tmp_path):
    evil = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "extra": _Exploit()}, evil, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    Path("/tmp/sam_block_pwned").unlink(missing_ok=True)
    with pytest.raises(CheckpointCorruptError, match="pickled Python objects") as error:
        load_state_dict(evil)
    assert str(evil) in str(error.value)
    assert not Path("/tmp/sam_block_pwned").exists()


def test_wrong_format_is_explained(tmp_path):
    bare = tmp_path / "bare.pt"
    torch.save({"weights": torch.zeros(1)}, bare)
    with pytest.raises(CheckpointCorruptError, match=r"official SAM 2 format \{'model': state_dict\}"):
        load_state_dict(bare)


def test_checkpoint_of_another_architecture_is_explained(empty_dir):
    torch.save({"model": {"not_a_sam_weight": torch.zeros(1)}}, empty_dir / "sam2.1_hiera_tiny.pt")
    with pytest.raises(CheckpointCorruptError, match="does not fit SAM 2 version 'hiera_tiny'"):
        load_model(get_variant("hiera_tiny"), torch.device("cpu"))


def test_pickled_objects_in_the_legacy_format_are_refused_too(tmp_path):
    evil = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "extra": _Exploit()}, evil, _use_new_zipfile_serialization=False)
    Path("/tmp/sam_block_pwned").unlink(missing_ok=True)
    with pytest.raises(CheckpointCorruptError, match="pickled Python objects") as error:
        load_state_dict(evil)
    assert str(evil) in str(error.value)
    assert not Path("/tmp/sam_block_pwned").exists()


def test_a_failed_load_is_not_cached(empty_dir, tiny_checkpoint):
    """A broken file fails every time it is asked for; once replaced, the next request loads it."""
    from sam_block.runtime.models import ModelRegistry

    registry = ModelRegistry()
    target = empty_dir / "sam2.1_hiera_tiny.pt"
    target.write_bytes(tiny_checkpoint.read_bytes()[:50_000])
    for _ in range(2):
        with pytest.raises(CheckpointCorruptError, match="corrupt or truncated"):
            registry.get("hiera_tiny", torch.device("cpu"))
    target.write_bytes(tiny_checkpoint.read_bytes())
    assert registry.get("hiera_tiny", torch.device("cpu")).image_size == 1024


# --------------------------------------------------------------------------- downloads are verified before the rename

UNRESOLVABLE = "http://sam-block-test.invalid/"  # .invalid never resolves (RFC 2606): a DNS failure


def _tiny_from(url):
    return Variant(
        name="hiera_tiny", config="configs/sam2.1/sam2.1_hiera_t.yaml", filename="sam2.1_hiera_tiny.pt", url=url
    )


def test_random_bytes_served_as_a_checkpoint_are_refused_and_deleted(server, empty_dir, monkeypatch):
    monkeypatch.delenv("SAM_BLOCK_OFFLINE")
    httpd, url = server
    httpd.files["/t.pt"] = os.urandom(3 << 20)
    with pytest.raises(CheckpointCorruptError) as error:
        resolve_checkpoint(_tiny_from(f"{url}/t.pt"), progress=False)
    message = str(error.value)
    assert f"{url}/t.pt" in message and "'hiera_tiny'" in message and "rejected and deleted" in message
    assert "corrupt or truncated" in message  # why: it is not a torch file
    assert os.listdir(empty_dir) == []  # neither the file nor a temporary one


def test_a_checkpoint_of_another_architecture_is_refused_before_the_rename(server, empty_dir, monkeypatch):
    monkeypatch.delenv("SAM_BLOCK_OFFLINE")
    httpd, url = server
    httpd.files["/t.pt"] = Path(get_variant("demo").bundled).read_bytes()  # a valid SAM 2.1 file, of the toy model
    with pytest.raises(CheckpointCorruptError, match="does not fit the architecture of version 'hiera_tiny'") as error:
        resolve_checkpoint(_tiny_from(f"{url}/t.pt"), progress=False)
    assert "of another shape" in str(error.value)
    assert os.listdir(empty_dir) == []


def test_a_known_sha256_must_match(server, empty_dir, monkeypatch, tiny_checkpoint):
    import hashlib

    monkeypatch.delenv("SAM_BLOCK_OFFLINE")
    httpd, url = server
    httpd.files["/t.pt"] = tiny_checkpoint.read_bytes()
    monkeypatch.setenv("SAM_BLOCK_CHECKPOINT_SHA256", "hiera_tiny=" + "0" * 64)
    with pytest.raises(CheckpointCorruptError, match="SHA-256 is [0-9a-f]{64}, expected 0{64}"):
        resolve_checkpoint(_tiny_from(f"{url}/t.pt"), progress=False)
    assert os.listdir(empty_dir) == []
    monkeypatch.setenv("SAM_BLOCK_CHECKPOINT_SHA256", "hiera_tiny=" + hashlib.sha256(httpd.files["/t.pt"]).hexdigest())
    assert resolve_checkpoint(_tiny_from(f"{url}/t.pt"), progress=False).read_bytes() == httpd.files["/t.pt"]


def test_downloaded_files_get_the_users_normal_permissions(server, empty_dir, monkeypatch, tiny_checkpoint):
    monkeypatch.delenv("SAM_BLOCK_OFFLINE")
    httpd, url = server
    httpd.files["/t.pt"] = tiny_checkpoint.read_bytes()
    previous = os.umask(0o022)
    try:
        path = resolve_checkpoint(_tiny_from(f"{url}/t.pt"), progress=False)
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644  # 0o666 less the umask, not mkstemp's 0o600


def test_an_unreachable_network_gives_our_message(empty_dir, monkeypatch):
    monkeypatch.delenv("SAM_BLOCK_OFFLINE")
    monkeypatch.setenv("SAM_BLOCK_CHECKPOINT_BASE_URL", UNRESOLVABLE)
    with pytest.raises(CheckpointMissingError) as error:
        resolve_checkpoint(get_variant("hiera_small"), progress=False)
    message = str(error.value)
    assert message.startswith("SAM 2 checkpoint for version 'hiera_small' is not available")
    assert str(empty_dir / "sam2.1_hiera_small.pt") in message
    assert "http://sam-block-test.invalid/sam2.1_hiera_small.pt" in message and "To fix:" in message
    assert "cannot resolve the host sam-block-test.invalid" in message and "urlopen" not in message
    assert os.listdir(empty_dir) == []


def test_checkpoints_and_models_do_not_import_each_other():
    """runtime/architecture.py sits below both: checkpoints never imports models, not even lazily."""
    import ast
    import subprocess
    import sys

    source = Path(checkpoints.__file__).read_text()
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    assert "sam_block.runtime.models" not in imported, imported
    probe = "import sys, sam_block.runtime.checkpoints; print('sam_block.runtime.models' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.stdout.strip() == "False"
