"""Hugging Face hub ids (``openai/whisper-large-v3``, ``Systran/faster-whisper-base`` ...).

:func:`hub_snapshot` resolves an id to a local snapshot directory through
``huggingface_hub.snapshot_download``, fetching only configs, tokenizer files and weights
(safetensors, or a CTranslate2 ``model.bin``; ``pytorch_model*.bin`` only when a repository
has nothing else, then ``flax_model*.msgpack`` only when it has not even those). Offline
(``HF_HUB_OFFLINE=1``, or the hub unreachable) a cached snapshot is used; when there is none
the error says so in one line and says what to do.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from jaxasr_interp.weights.layout import CheckpointError

HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9_.\-]+$")
ALLOW_PATTERNS = ["config.json", "*.json", "*.safetensors", "model.bin", "vocabulary.txt", "*.tiktoken"]
TORCH_PATTERNS = ["pytorch_model*.bin"]
FLAX_PATTERNS = ["flax_model*.msgpack"]
_TRUE = {"1", "on", "yes", "true"}


def looks_like_hub_id(source: str) -> bool:
    return isinstance(source, str) and bool(HUB_ID_RE.match(source)) and ".." not in source


def _offline() -> bool:
    # Read at call time (huggingface_hub reads it once, at import).
    from huggingface_hub import constants
    env = os.environ.get("HF_HUB_OFFLINE")
    return env.strip().lower() in _TRUE if env is not None else bool(constants.HF_HUB_OFFLINE)


def _cache_dir() -> str | None:
    # Also read at call time, so that HF_HOME / HF_HUB_CACHE set after import are honoured.
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def _has_weights(directory: Path) -> bool:
    return any(directory.glob("*.safetensors")) or (directory / "model.bin").is_file() or \
        any(directory.glob("pytorch_model*.bin")) or any(directory.glob("flax_model*.msgpack"))


def _unreachable(repo_id: str) -> CheckpointError:
    return CheckpointError(
        f"model {repo_id} is not in the Hugging Face cache and the hub cannot be reached; download it on a "
        f"connected machine (huggingface-cli download {repo_id}) or pass a local directory")


def hub_snapshot(repo_id: str, revision: str | None = None) -> Path:
    """A local directory with the snapshot of ``repo_id`` (downloaded if needed and possible)."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (GatedRepoError, HFValidationError, LocalEntryNotFoundError,
                                            RepositoryNotFoundError, RevisionNotFoundError)
    except ImportError:
        raise CheckpointError(f"loading {repo_id} from the hub needs huggingface_hub: pip install huggingface_hub") from None
    offline = _offline()

    def download(patterns):
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns,
                                      cache_dir=_cache_dir(), local_files_only=offline))

    try:
        directory = download(ALLOW_PATTERNS)
        for fallback in (TORCH_PATTERNS, FLAX_PATTERNS):
            if not _has_weights(directory) and not offline:
                directory = download(ALLOW_PATTERNS + fallback)
    except GatedRepoError:
        raise CheckpointError(f"model {repo_id} is gated on the Hugging Face hub: accept its terms and log in "
                              "(huggingface-cli login), or pass a local directory") from None
    except RepositoryNotFoundError:
        raise CheckpointError(f"model {repo_id} does not exist on the Hugging Face hub (or is private)") from None
    except RevisionNotFoundError:
        raise CheckpointError(f"model {repo_id} has no revision {revision!r} on the Hugging Face hub") from None
    except HFValidationError as e:
        raise CheckpointError(f"{repo_id!r} is not a valid Hugging Face hub id ({e})") from None
    except LocalEntryNotFoundError:  # offline, or the network failed, and nothing cached
        raise _unreachable(repo_id) from None
    except OSError as e:  # a network error that huggingface_hub did not wrap
        if "connect" in str(e).lower() or "resolve" in str(e).lower():
            raise _unreachable(repo_id) from None
        raise
    if not _has_weights(directory):
        raise CheckpointError(f"model {repo_id}: the snapshot in {directory} has no weights "
                              "(no *.safetensors, model.bin, pytorch_model*.bin or flax_model*.msgpack)")
    return directory
