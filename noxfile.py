"""The test matrix and the checks CI runs: ``nox`` runs them all, ``nox -s NAME`` one.

Lanes: Python 3.10 with Django 4.2, 3.11 with Django 5.2, 3.12 with the newest
Django 6, each with the newest Celery, Huey, Dramatiq and django-q2. Each lane runs
the whole suite (PostgreSQL when it is up); beside it, the 3.11 lane runs the
transaction behaviours again on SQLite (every lane with AIRLOCK_SQLITE_EVERY_LANE=1)
and the 3.10 lane the outbox's on MariaDB. The deployment-shaped projects
(tests/projects/) run beside the 3.11 lane (Django Tasks' beside 3.12), the real
servers beside 3.12, and the tests marked ``one_lane`` on 3.10 only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import nox

ROOT = Path(__file__).resolve().parent
PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True

# (python, django, pip requirement for that Django)
LANES = [
    ("3.10", "4.2", "django>=4.2,<5.0"),
    ("3.11", "5.2", "django>=5.2,<6.0"),
    ("3.12", "6", "django>=6.0,<7.0"),
]
# Packages only the Django 6 lane installs (Django Tasks backends and the like).
# --- extra packages for the Python 3.12 / Django 6 lane: add them here ---
DJANGO_6_EXTRAS: list[str] = []
# --- end of extra packages ---

TOOLS_PYTHON = "3.11"
# The lane that also reruns the Django tests on SQLite. Every lane doing it costs about
# a minute each, which the 15-minute CI budget cannot spare;
# AIRLOCK_SQLITE_EVERY_LANE=1 asks for it anyway.
SQLITE_LANE = "3.11"
MARIADB_LANE = "3.10"  # the outbox tests again on MariaDB
# Tests marked one_lane (version-independent: fresh interpreters, real processes) run here only.
ONE_LANE = "3.10"
PROJECTS_LANE = "3.11"  # tests/projects on Django 5.2 (the Django Tasks project on the Django 6 lane)
# What the reruns on SQLite and MariaDB cover (the rest does not depend on the database).
OUTBOX_TESTS = [
    f"tests/test_django_outbox{name}.py" for name in ("", "_relay", "_faults", "_drain", "_ops", "_writers")
]
SQLITE_TESTS = [
    f"tests/test_django_{name}.py"
    for name in ("scope", "rollback", "commit_runs", "middleware", "commands", "testing", "settings")
]


def _use_pyenv_versions() -> None:
    # pyenv's shims run only the selected versions: select every installed 3.x so
    # that python3.10 ... python3.13 are all found, the default one first.
    if os.environ.get("PYENV_VERSION") or shutil.which("pyenv") is None:
        return
    try:
        default = subprocess.run(["pyenv", "version-name"], capture_output=True, text=True, check=True).stdout.strip()
        installed = subprocess.run(["pyenv", "versions", "--bare"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return
    versions = [v for v in installed.split() if v.startswith("3.") and "/" not in v]
    os.environ["PYENV_VERSION"] = ":".join(dict.fromkeys([default, *sorted(versions, reverse=True)]))


_use_pyenv_versions()


def _group(name: str) -> list[str]:
    return nox.project.dependency_groups(PYPROJECT, name)


@nox.session(python=[lane[0] for lane in LANES])
def tests(session: nox.Session) -> None:
    """The whole suite on one lane, with runs beside it: SQLite, MariaDB, RabbitMQ, real servers."""
    _, django, requirement = next(lane for lane in LANES if lane[0] == session.python)
    extras = DJANGO_6_EXTRAS if django == "6" else []
    session.install("-e", ".[all]", *_group("test"), requirement, *extras)
    session.run("python", "-c", "import django, sys; print('Django', django.get_version(), 'on', sys.version)")
    # Test databases of their own, so a run never drops another run's (two work trees, CI).
    suffix = os.environ.get("AIRLOCK_TEST_DB_SUFFIX") or f"_nox{os.getpid()}"
    lanes = [lane[0] for lane in LANES]
    # The main run leaves to runs beside it (below) what isolates itself: the outbox on a
    # RabbitMQ of its own and the real servers, each on one lane; four relays over 10,000
    # rows run on one lane too, and the outbox tests under both fast paths.
    env = {
        "AIRLOCK_TEST_DB_SUFFIX": suffix,
        "AIRLOCK_SKIP_OWN_RABBITMQ": "1",
        "AIRLOCK_SKIP_SERVERS": "1",
        "AIRLOCK_SKIP_PROJECTS": "1",
    }
    if session.python != lanes[0]:
        env["AIRLOCK_SKIP_TEN_THOUSAND"] = "1"
    if session.python != ONE_LANE:
        env["AIRLOCK_ONE_LANE_ELSEWHERE"] = "1"
    if session.python != SQLITE_LANE:
        env["AIRLOCK_TEST_FAST_PATHS"] = "background"
    # Beside the main run, sharing the two cores: each uses a database of its own and no
    # shared broker (the in-memory transport, or a Redis, RabbitMQ or server of its own).
    # The transaction behaviours again on SQLite and MariaDB (rows in the caller's
    # transaction and savepoints, the relay's claims and leases, the fault scenarios).
    rerun = {**env, "AIRLOCK_SKIP_TEN_THOUSAND": "1", "AIRLOCK_TEST_FAST_PATHS": "background"}
    beside = []
    if session.python == MARIADB_LANE:
        beside.append(("MariaDB", OUTBOX_TESTS, {**rerun, "AIRLOCK_TEST_DB": "mariadb"}))
    if session.python == SQLITE_LANE or os.environ.get("AIRLOCK_SQLITE_EVERY_LANE"):
        beside.append(("SQLite", [*SQLITE_TESTS, *OUTBOX_TESTS], {**rerun, "AIRLOCK_TEST_DB": "sqlite"}))
    if session.python == SQLITE_LANE:
        own = {"AIRLOCK_TEST_DB_SUFFIX": f"{suffix}_rmq", "AIRLOCK_TEST_FAST_PATHS": "background"}
        beside.append(("RabbitMQ", ["tests/test_django_outbox_rabbitmq.py"], own))
    if session.python == lanes[-1]:
        beside.append(("servers", ["tests/test_servers.py"], {"AIRLOCK_TEST_DB_SUFFIX": f"{suffix}_srv"}))
    # The deployment-shaped projects (tests/projects/): the queues' on Django 5.2, and the
    # Django Tasks one on Django 6; they do not depend on the Python version otherwise.
    if session.python == PROJECTS_LANE:
        # A 25-second soak: CI's budget; the default (40) for a run by hand.
        prj = {"AIRLOCK_TEST_DB_SUFFIX": f"{suffix}_prj", "AIRLOCK_SOAK_SECONDS": "25"}
        beside.append(("projects", ["tests/test_projects.py"], prj))
    elif session.python == lanes[-1]:
        projects = ["tests/test_projects.py", "-k", "django_tasks"]
        beside.append(("projects", projects, {"AIRLOCK_TEST_DB_SUFFIX": f"{suffix}_prj"}))
    started = [_beside(session, name, tests, extra) for name, tests, extra in beside]
    try:
        # --durations: CI's log shows where the 15-minute budget goes.
        session.run("python", "-m", "pytest", "--durations=10", *session.posargs, env=env)
    finally:
        failed = [name for name, process, log in started if _finish(process, log, name)]
    if failed:
        session.error(f"the {' and '.join(failed)} run beside the main one failed (its output is above)")


def _beside(session: nox.Session, name: str, tests: list[str], extra: dict[str, str]) -> tuple[str, Any, Any]:
    """Start a pytest run in the session's venv in the background, its output to a file."""
    log = tempfile.TemporaryFile(mode="w+")
    environment = {**os.environ, **extra, "PATH": f"{session.bin}{os.pathsep}{os.environ.get('PATH', '')}"}
    python = str(Path(session.bin) / "python")
    process = subprocess.Popen(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    session.log(f"{name} run started beside the main run: {' '.join(tests)}")
    return name, process, log


def _finish(process: Any, log: Any, name: str) -> bool:
    """Wait for a run started by _beside, print its output; whether it failed."""
    code = process.wait()
    log.seek(0)
    print(f"---- {name}, run beside the main one (exit {code}) ----\n{log.read()}", flush=True)
    log.close()
    return code != 0


@nox.session(python=TOOLS_PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the tree."""
    session.install(*_group("lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=TOOLS_PYTHON)
def mypy(session: nox.Session) -> None:
    """mypy --strict over src/."""
    session.install("-e", ".[all]", *_group("lint"))
    session.run("mypy", "--strict", "src")


@nox.session(python=TOOLS_PYTHON)
def docs(session: nox.Session) -> None:
    """The docs site, built strictly (a broken link or reference fails)."""
    session.install(*_group("docs"))  # mkdocstrings reads src/ statically: no need to install it
    site = str(Path(session.create_tmp()) / "site")
    session.run("mkdocs", "build", "--strict", "--site-dir", site, env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session(python=TOOLS_PYTHON)
def package(session: nox.Session) -> None:
    """Build sdist and wheel, twine check them, then install the wheel in clean venvs and run the first example."""
    session.install(*_group("release"), "uv")
    dist = Path(tempfile.mkdtemp(prefix="airlock-dist-"))
    session.run("python", "-m", "build", "--installer", "uv", "--outdir", str(dist))
    session.run("twine", "check", "--strict", *(str(p) for p in dist.iterdir()))
    [wheel] = dist.glob("*.whl")
    examples = [str(ROOT / "README.md"), str(ROOT / "docs" / "getting_started.md")]
    # The oldest and newest Python the classifiers name; the lanes cover 3.10-3.12.
    for python_version in ("3.10", "3.13"):
        clean = dist / f"venv-{python_version}"
        # uv makes the venv (with pip in it: "--seed") in a second where "python -m venv" takes half a minute.
        session.run("uv", "venv", "--quiet", "--seed", "--python", python_version, str(clean))
        python = str(clean / "bin" / "python")
        session.run(python, "-m", "pip", "install", "-q", str(wheel), external=True)
        # Run from outside the work tree, so only the installed wheel can be imported.
        with session.chdir(dist):
            session.run(python, str(ROOT / ".ci" / "check_wheel.py"), *examples, external=True)
    shutil.rmtree(dist)
