"""Dataset files downloaded once into a cache and checked against their published MD5 sums.

The cache is ``$FREENETS_DATA`` when set, otherwise ``~/.cache/freenets``; each dataset has a
folder there. A file is written under its final name only after its checksum matched, so a file in
the cache is a complete download.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from tqdm.auto import tqdm

from freenets import atomic
from freenets.errors import ChecksumMismatch, DataError

Opener = Callable[..., Any]
_CHUNK = 1 << 20
_TIMEOUT_S = 60.0


def cache_root() -> Path:
    """The download cache: ``$FREENETS_DATA``, or ``~/.cache/freenets`` when it is unset."""
    configured = os.environ.get("FREENETS_DATA")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "freenets"


def md5sum(path: str | Path) -> str:
    """The hexadecimal MD5 digest of a file."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_checked(response: Any, md5: str, label: str) -> Callable[[IO[bytes]], None]:
    """A writer for :func:`freenets.atomic.write_stream` that copies ``response`` and checks its MD5."""

    def write(stream: IO[bytes]) -> None:
        digest = hashlib.md5(usedforsecurity=False)
        length = response.headers.get("Content-Length") if response.headers else None
        total = int(length) if length and length.isdigit() else None
        # disable=None: a progress bar on a terminal only, never in logs.
        with tqdm(total=total, unit="B", unit_scale=True, desc=label, disable=None) as bar:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                digest.update(chunk)
                stream.write(chunk)
                bar.update(len(chunk))
        if digest.hexdigest() != md5:
            raise ChecksumMismatch(f"MD5 {digest.hexdigest()} differs from the published {md5}")

    return write


def fetch(
    filename: str,
    md5: str,
    mirrors: Sequence[str],
    directory: Path,
    *,
    opener: Opener | None = None,
) -> Path:
    """Download ``filename`` from the first mirror that serves it with the right checksum.

    Parameters
    ----------
    filename : str
        The file's name on the mirrors and in ``directory``.
    md5 : str
        Its published MD5 digest.
    mirrors : sequence of str
        Base URLs, each ending in ``/``, tried in order.
    directory : Path
        Where the file is written.
    opener : callable, optional
        ``urllib.request.urlopen`` or a stand-in taking ``(url, timeout=...)``.

    Returns
    -------
    Path
        The downloaded file; left as it is if already there.

    Raises
    ------
    DataError
        No mirror served the file with the published checksum.
    """
    target = directory / filename
    if target.is_file():
        return target
    open_url = opener if opener is not None else urllib.request.urlopen
    failures: list[str] = []
    for mirror in mirrors:
        url = mirror + filename
        try:
            with open_url(url, timeout=_TIMEOUT_S) as response:
                atomic.write_stream(target, _copy_checked(response, md5, filename))
            return target
        except ChecksumMismatch as error:
            failures.append(f"{url}: {error}")
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
            reason = getattr(error, "reason", None) or error
            failures.append(f"{url}: {reason}")
    raise DataError(
        f"could not download {filename} ({'; '.join(failures)}); check the internet connection "
        f"and try again, or put the file in {directory} yourself, or pass --data-dir DIR"
    )


def extract(archive: Path, members: Sequence[str], directory: Path) -> list[Path]:
    """Copy ``members`` (paths inside the zip ``archive``) into ``directory`` under their base names.

    Raises
    ------
    DataError
        The archive is damaged, or lacks one of the members.
    """
    extracted: list[Path] = []
    fix = "delete it to download it again"
    try:
        with zipfile.ZipFile(archive) as bundle:
            for member in members:
                target = directory / Path(member).name
                if not target.is_file():
                    try:
                        # zipfile checks each member's CRC as it reads it.
                        atomic.write_bytes(target, bundle.read(member))
                    except KeyError:
                        raise DataError(f"{archive}: no member {member}; {fix}") from None
                extracted.append(target)
    except (zipfile.BadZipFile, EOFError) as error:
        raise DataError(f"{archive}: damaged zip archive ({error}); {fix}") from None
    return extracted
