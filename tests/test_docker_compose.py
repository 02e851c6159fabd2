"""docker-compose.yml describes the production topology with `bps` commands: checked
structurally, and by `docker compose config` where a compose client is installed (no engine
is needed for that)."""
from __future__ import annotations

from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def test_every_process_of_the_topology_is_there(services):
    assert set(services) == {"postgres", "redis", "migrate", "api", "worker-cpu", "worker-gpu", "flower", "prometheus"}


def test_images_come_from_variables_with_todays_defaults(services):
    assert services["postgres"]["image"] == "${POSTGRES_IMAGE:-postgres:16}"
    assert services["redis"]["image"] == "${REDIS_IMAGE:-redis:7}"
    for name in ("api", "worker-cpu", "worker-gpu", "flower"):
        args = services[name]["build"]["args"]
        assert args["BASE_IMAGE"] == "${BPS_BASE_IMAGE:-python:3.11-slim}" and args["CA_CERTS"] == "${BPS_CA_CERTS:-}", name
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim\nFROM ${BASE_IMAGE}" in dockerfile and "ARG CA_CERTS" in dockerfile


def test_workers_restart_after_a_crash_and_have_time_to_hand_their_job_back(services):
    for name in ("worker-cpu", "worker-gpu"):
        assert services[name]["restart"] in ("unless-stopped", "always", "on-failure"), name
        assert services[name]["stop_grace_period"] == "60s", name


def test_logs_are_json_by_default_and_prometheus_scrapes_the_api(services):
    for name in ("migrate", "api", "worker-cpu", "worker-gpu", "flower"):
        assert services[name]["environment"]["LOG_FORMAT"] == "${LOG_FORMAT:-json}", name
    assert services["flower"]["command"][:4] == ["celery", "-A", "worker.celery_app", "flower"]
    assert services["prometheus"]["profiles"] == ["monitoring"]
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())["scrape_configs"]
    assert [(job["metrics_path"], job["static_configs"][0]["targets"]) for job in scrape] == [("/metrics", ["api:8000"])]


def test_service_processes_are_bps_commands_with_both_urls(services):
    for name in ("migrate", "api", "worker-cpu", "worker-gpu"):
        assert services[name]["command"][0] == "bps", name
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgresql+psycopg://") and env["BROKER_URL"].startswith("redis://")


def test_migrate_runs_once_before_the_api_and_workers(services):
    assert services["migrate"]["command"] == ["bps", "migrate"] and services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker-cpu", "worker-gpu"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_gpu_worker_reserves_an_nvidia_device_and_consumes_the_gpu_queue(services):
    gpu = services["worker-gpu"]
    command = gpu["command"]
    assert command[command.index("--queues") + 1] == "gpu"
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    cpu = services["worker-cpu"]["command"]
    assert cpu[cpu.index("--queues") + 1] == "cpu"


def test_servers_and_processes_have_health_checks(services):
    for name, service in services.items():
        if name != "migrate":  # a one-shot job
            assert service["healthcheck"]["test"], name
    assert "/healthz" in " ".join(services["api"]["healthcheck"]["test"])


def compose_command() -> list[str] | None:
    """`docker compose` (v2 plugin) or `docker-compose` (v1), whichever this machine has."""
    import shutil
    import subprocess

    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


@pytest.mark.skipif(compose_command() is None, reason="neither `docker compose` nor `docker-compose` is installed")
def test_docker_compose_config_validates_the_file() -> None:
    import subprocess

    result = subprocess.run([*compose_command(), "config", "-q"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
