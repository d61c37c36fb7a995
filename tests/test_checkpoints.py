"""Finding, downloading and safely loading checkpoints; the messages users see."""

import http.server
import os
import pickle
import threading
from pathlib import Path

import pytest
import torch

from sam_block.errors import CheckpointCorruptError, CheckpointMissingError
from sam_block.runtime import checkpoints
from sam_block.runtime.checkpoints import download, load_state_dict, resolve_checkpoint
from sam_block.runtime.models import load_model
from sam_block.runtime.variants import Variant, get_variant


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


class _Handler(http.server.BaseHTTPRequestHandler):
    payload = b""
    truncate = False

    def do_GET(self):  # noqa: N802
        if self.path == "/missing.pt":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload[: len(self.payload) // 2] if self.truncate else self.payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    _Handler.truncate = False


def test_missing_checkpoint_is_downloaded_atomically(server, empty_dir, monkeypatch, tiny_checkpoint):
    monkeypatch.delenv("SAM_BLOCK_OFFLINE")
    _, url = server
    _Handler.payload = tiny_checkpoint.read_bytes()
    variant = Variant(name="hiera_tiny", config="configs/sam2.1/sam2.1_hiera_t.yaml", filename="sam2.1_hiera_tiny.pt", url=f"{url}/t.pt")
    path = resolve_checkpoint(variant, progress=False)
    assert path == empty_dir / "sam2.1_hiera_tiny.pt"
    assert path.read_bytes() == _Handler.payload
    assert os.listdir(empty_dir) == ["sam2.1_hiera_tiny.pt"]
    model = load_model(variant, torch.device("cpu"))
    assert model.image_size == 1024


def test_interrupted_download_leaves_no_file_and_explains(server, empty_dir, monkeypatch):
    monkeypatch.delenv("SAM_BLOCK_OFFLINE")
    _, url = server
    _Handler.payload, _Handler.truncate = b"x" * 4096, True
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
    _Handler.payload, _Handler.truncate = b"new" * 100, True
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
