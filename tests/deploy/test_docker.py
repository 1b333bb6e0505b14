"""The container files say what production needs, checked without a Docker daemon.

``Dockerfile`` and ``docker-compose.yml`` are parsed (nothing is built): a non-root user, one
gunicorn worker of Routilux's class, no reloader, the database on a volume, a health check on the
public liveness probe — and that probe command is run for real against a server with API keys
on. ``docker-compose.yml`` wires nginx with ``deploy/nginx.conf`` to the app, trusts exactly
nginx's address, and takes secrets from ``.env``, never from the file itself.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

from ruamel.yaml import YAML

from tests.support.servers import ServerProcess, free_port

TESTS: Final = Path(__file__).resolve().parent.parent
ROOT: Final = TESTS.parent

LIVE_URL: Final = "http://127.0.0.1:20555/api/health/live"


def dockerfile() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` in order, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        whole = (pending + line).strip()
        pending = ""
        keyword, _, rest = whole.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends in a continuation line"
    return instructions


def args(text: str) -> list[str]:
    """An instruction's arguments: exec form (a JSON array) or shell form."""
    return json.loads(text) if text.startswith("[") else shlex.split(text)


def env_of(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in instructions:
        if keyword == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(rest))
    return env


def compose() -> dict[str, Any]:
    return YAML(typ="safe").load((ROOT / "docker-compose.yml").read_text())


def only(instructions: list[tuple[str, str]], keyword: str) -> str:
    found = [rest for k, rest in instructions if k == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {found}"
    return found[0]


# -- Dockerfile --------------------------------------------------------------------------------
def test_the_image_is_python_311_slim_and_installs_the_api_extra_and_gunicorn() -> None:
    instructions = dockerfile()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    installs = [rest for k, rest in instructions if k == "RUN" and "pip install" in rest]
    assert len(installs) == 1 and '".[api]"' in installs[0] and "gunicorn" in installs[0]


def test_the_server_runs_as_a_non_root_user() -> None:
    instructions = dockerfile()
    users = [(i, rest) for i, (k, rest) in enumerate(instructions) if k == "USER"]
    assert users, "no USER: the server would run as root"
    index, user = users[-1]
    assert user.split(":")[0] not in {"root", "0"}
    cmd_index = next(i for i, (k, _) in enumerate(instructions) if k == "CMD")
    assert index < cmd_index
    created = " ".join(rest for k, rest in instructions[:index] if k == "RUN")
    assert "useradd" in created and user in created, "the USER is created in the image"


def test_the_environment_is_production_and_the_database_lives_on_a_volume() -> None:
    instructions = dockerfile()
    env = env_of(instructions)
    assert env["ROUTILUX_API_RELOAD"] == "false"
    assert env["ROUTILUX_API_HOST"] == "0.0.0.0"
    volumes = args(only(instructions, "VOLUME"))
    assert str(Path(env["ROUTILUX_DB"]).parent) in volumes
    setup = " ".join(rest for k, rest in instructions if k == "RUN")
    assert "chown routilux:routilux /data" in setup, "the non-root user can write its database"


def test_the_command_is_gunicorn_with_one_routilux_worker_on_port_20555() -> None:
    cmd = args(only(dockerfile(), "CMD"))
    assert cmd[0] == "gunicorn" and cmd[-1] == "routilux.api.main:app"
    assert cmd[cmd.index("-w") + 1] == "1"
    assert cmd[cmd.index("-k") + 1] == "routilux.api.worker.UvicornWorker"
    assert cmd[cmd.index("--bind") + 1] == "0.0.0.0:20555"
    assert "--reload" not in cmd


def healthcheck_command(text: str) -> list[str]:
    """The command of a ``HEALTHCHECK [options] CMD ...`` instruction."""
    options, _, command = text.partition("CMD ")
    assert re.fullmatch(r"(--[a-z-]+=\S+\s*)*", options), f"unexpected HEALTHCHECK options: {options!r}"
    return args(command)


def test_the_health_check_probes_the_public_liveness_endpoint_with_python() -> None:
    command = healthcheck_command(only(dockerfile(), "HEALTHCHECK"))
    assert command[:2] == ["python", "-c"] and "curl" not in " ".join(command)
    assert LIVE_URL in command[2]


def test_the_health_check_command_passes_on_a_live_server_with_keys_on_and_fails_without_one(tmp_path: Path) -> None:
    """Run the very command (with the test server's port): it needs no key, and it tells a dead
    server from a live one."""
    command = healthcheck_command(only(dockerfile(), "HEALTHCHECK"))
    code = command[2]

    def probe(port: int) -> int:
        script = code.replace("127.0.0.1:20555", f"127.0.0.1:{port}")
        assert script != code
        return subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, timeout=30).returncode

    server = ServerProcess(tmp_path / "r.db", api_key="k", ROUTILUX_API_KEY_ENABLED="true", ROUTILUX_API_KEY="k")
    try:
        server.start()
        assert probe(server.port) == 0
    finally:
        server.stop()
    assert probe(free_port()) != 0


# -- docker-compose.yml ------------------------------------------------------------------------
def test_compose_runs_the_app_with_a_health_check_on_the_liveness_probe() -> None:
    app = compose()["services"]["routilux"]
    check = app["healthcheck"]["test"]
    assert check[0] == "CMD" and LIVE_URL in " ".join(check) and "curl" not in " ".join(check)
    assert app["environment"]["ROUTILUX_API_RELOAD"] == "false"
    assert "ports" not in app, "only nginx is reachable from outside"
    assert app.get("deploy", {}).get("replicas", 1) == 1 and app.get("scale", 1) == 1


def test_compose_keeps_secrets_in_env_files_and_turns_production_safeguards_on() -> None:
    env = compose()["services"]["routilux"]["environment"]
    assert env["ROUTILUX_API_KEY_ENABLED"] == "true"
    assert re.fullmatch(r"\$\{ROUTILUX_API_KEY:\?[^}]+\}", env["ROUTILUX_API_KEY"]), "the key comes from .env, required"
    assert "ROUTILUX_API_KEYS" not in env or env["ROUTILUX_API_KEYS"].startswith("${")
    assert env["ROUTILUX_RATE_LIMIT_ENABLED"] == "true"
    assert env["ROUTILUX_CORS_ORIGINS"].startswith("${"), "CORS origins are the deployment's own"
    example = (ROOT / ".env.example").read_text()
    assert re.search(r"^ROUTILUX_API_KEY=$", example, re.MULTILINE), "the example file holds no key"


def test_compose_keeps_the_database_on_a_named_volume() -> None:
    spec = compose()
    app = spec["services"]["routilux"]
    db_dir = str(Path(app["environment"]["ROUTILUX_DB"]).parent)
    mounts = {m.split(":")[1]: m.split(":")[0] for m in app["volumes"]}
    assert mounts[db_dir] in spec["volumes"]


def test_compose_puts_nginx_with_deploy_nginx_conf_in_front_and_trusts_only_nginx() -> None:
    spec = compose()
    app, nginx = spec["services"]["routilux"], spec["services"]["nginx"]
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    assert nginx["depends_on"]["routilux"]["condition"] == "service_healthy"
    assert {p.split(":")[-1] for p in nginx["ports"]} == {"80", "443"}
    nginx_ip = nginx["networks"]["backend"]["ipv4_address"]
    assert app["environment"]["ROUTILUX_TRUSTED_PROXIES"] == nginx_ip
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    assert "server routilux:20555;" in conf, "nginx's upstream is the compose service on the app's port"
    assert "20555" in app["expose"]


def test_dockerignore_keeps_local_state_and_secrets_out_of_the_image() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", ".env", "*.db", "*.db-wal", "*.db-shm", "*.db.lock"} <= ignored

