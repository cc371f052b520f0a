"""The pip layer of a local directory image: pinned packages (JupyterLab) installed at build time.

Used by ``container_images/build`` for debootstrap recipes with ``"pip_requirements": FILE``
(``catalog.json``): the image's own ``python3 -m pip`` runs in a ``chroot`` of the new tree (the
build already needs root) and installs FILE into ``/usr/local`` (Debian's pip scheme for root, so
``jupyter`` lands in ``/usr/local/bin``, on every job's PATH). Stdlib-only, like ``catalog``.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable

__all__ = ["PipLayerError", "host_ca_bundle", "pip_install", "pip_requirements_path"]


class PipLayerError(RuntimeError):
    pass


# Passed from the caller to pip in the chroot (a proxy, a private index); nothing else is.
PIP_PASS_ENV = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
                "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "PIP_DEFAULT_TIMEOUT")


def host_ca_bundle() -> Path | None:
    """The CA bundle the caller's own pip trusts (a site's TLS-inspecting proxy lives there)."""
    for cand in (os.environ.get("PIP_CERT"), os.environ.get("REQUESTS_CA_BUNDLE"),
                 os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
        if cand and Path(cand).is_file():
            return Path(cand)
    return None


def pip_requirements_path(recipe: dict, base_dir: Path) -> Path:
    path = (base_dir / recipe["pip_requirements"]).resolve()
    if not path.is_file():
        raise PipLayerError(f"local_recipe pip_requirements {recipe['pip_requirements']!r}: no such file {path}")
    return path


def pip_install(root: Path, reqs: Path, log_file, pip_cache: Path | None,
                log: Callable[[str], None] = print) -> None:
    """`pip install -r REQUIREMENTS` with the image's own python3 (chroot) into /usr/local.

    The wheels cache (PIP_CACHE, kept beside the images) is renamed into the tree for the run and
    back, so a rebuild downloads nothing; byte code is compiled (the image is read-only when it
    runs, so Python could not write it then)."""
    work = root / "tmp" / "slipway-pip"
    work.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(reqs, work / "requirements.txt")
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
           "LANG": "C.UTF-8", "PIP_BREAK_SYSTEM_PACKAGES": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           "PIP_ROOT_USER_ACTION": "ignore", "PIP_NO_INPUT": "1"}
    env.update({k: os.environ[k] for k in PIP_PASS_ENV if os.environ.get(k)
                and not (k.startswith("PIP_") and "file:" in os.environ[k])})
    ca = host_ca_bundle()
    if ca is not None:
        shutil.copyfile(ca, work / "ca.crt")
        env["PIP_CERT"] = "/tmp/slipway-pip/ca.crt"
    cache_in = work / "cache"
    cache_used = False
    if pip_cache is not None:
        try:
            if pip_cache.is_dir():
                os.rename(pip_cache, cache_in)
            else:
                cache_in.mkdir()
            cache_used = True
        except OSError as exc:
            log(f"pip cache {pip_cache} not used: {exc}")
    argv = ["chroot", str(root), "/usr/bin/python3", "-m", "pip", "install", "--progress-bar", "off",
            "--no-warn-script-location", "--requirement", "/tmp/slipway-pip/requirements.txt"]
    argv += ["--cache-dir", "/tmp/slipway-pip/cache"] if cache_used else ["--no-cache-dir"]
    log(f"pip install -r {reqs.name} in the image  (log: {log_file.name})")
    log_file.flush()
    try:
        proc = subprocess.run(argv, stdout=log_file, stderr=subprocess.STDOUT, env=env)
        if proc.returncode == 0 and (root / "usr/local/bin/jupyter").exists():
            check = subprocess.run(["chroot", str(root), "/usr/local/bin/jupyter", "lab", "--version"],
                                   capture_output=True, text=True, env=env)
            if check.returncode != 0:
                raise PipLayerError("`jupyter lab --version` failed in the new image: "
                                    f"{(check.stderr or check.stdout).strip()[-500:]}")
            log(f"jupyter lab {check.stdout.strip()} installed")
    finally:
        if cache_used:
            shutil.rmtree(pip_cache, ignore_errors=True)
            try:
                os.rename(cache_in, pip_cache)
            except OSError:
                pass
        shutil.rmtree(work, ignore_errors=True)
        for junk in (".cache", ".local", ".jupyter"):  # nothing of root's in a shared image
            shutil.rmtree(root / "root" / junk, ignore_errors=True)
    if proc.returncode != 0:
        log_file.flush()
        tail = Path(log_file.name).read_text(errors="replace").splitlines()[-15:]
        raise PipLayerError(f"pip install failed (exit {proc.returncode}):\n" + "\n".join(tail))
