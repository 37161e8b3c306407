"""Publishing a leaderboard: to a Hugging Face dataset repo, or to a local folder.

Both destinations get the leaderboard JSON (validated first: an invalid file is never
published) and the rendered page as ``index.html``. The Hub upload uses
``huggingface_hub.HfApi.upload_file`` with the token from ``HF_TOKEN`` (or
``HUGGING_FACE_HUB_TOKEN``); nothing is uploaded without one.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

from persona_eval.errors import RunError, UsageError
from persona_eval.storage.files import atomic_write_json

from . import load_leaderboard
from .render import PAGE_NAME, write_page

TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def hub_token() -> str:
    for name in TOKEN_VARIABLES:
        token = os.environ.get(name, "").strip()
        if token:
            return token
    raise UsageError(f"publishing to the Hub needs a token: set {' or '.join(TOKEN_VARIABLES)}")


def publish_to_dir(path: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Copy the validated leaderboard JSON and its page into ``out_dir``."""
    path = Path(path)
    doc = load_leaderboard(path)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError("exists and is not a directory", where=str(out))
    target = out / path.name
    try:
        atomic_write_json(target, doc)
    except OSError as exc:
        raise UsageError(f"cannot write: {exc.strerror or exc}", where=str(target)) from exc
    page = write_page(doc, out, source_dir=path.parent)
    return [target, page]


def publish_to_hub(
    path: str | os.PathLike,
    repo_id: str,
    *,
    path_in_repo: str | None = None,
    revision: str | None = None,
    create: bool = False,
    api: Any = None,
) -> list[str]:
    """Upload the leaderboard JSON and its page to a dataset repo; returns the commit URLs."""
    path = Path(path)
    if not _REPO_ID.match(repo_id) or ".." in repo_id:
        raise UsageError(f"--repo {repo_id!r} is not a Hub repo id (expected NAME or OWNER/NAME)")
    doc = load_leaderboard(path)
    token = hub_token()
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    name = path_in_repo or path.name
    folder = name.rsplit("/", 1)[0] + "/" if "/" in name else ""
    urls: list[str] = []
    with tempfile.TemporaryDirectory(prefix="persona-eval-publish-") as tmp:
        # The repo holds no run directories, so the page names them instead of linking.
        page = write_page(doc, tmp, links=False)
        uploads = [(path, name), (page, folder + PAGE_NAME)]
        try:
            if create:
                api.create_repo(repo_id, repo_type="dataset", exist_ok=True, token=token)
            for local, remote in uploads:
                info = api.upload_file(
                    path_or_fileobj=str(local), path_in_repo=remote, repo_id=repo_id, repo_type="dataset",
                    revision=revision, token=token,
                    commit_message=f"persona-eval leaderboard: {remote}",
                )
                urls.append(str(getattr(info, "commit_url", info)))
        except UsageError:
            raise
        except Exception as exc:  # noqa: BLE001 - network, auth and Hub errors all end the same way
            raise RunError(f"upload to dataset repo {repo_id!r} failed: {type(exc).__name__}: {exc}") from exc
    return urls
