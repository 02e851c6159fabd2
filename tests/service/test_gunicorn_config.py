"""service.gunicorn_config: each gunicorn worker warms its broker publisher in the background."""
from __future__ import annotations

import threading

import worker.queue
from service import gunicorn_config


def test_a_starting_worker_warms_the_publisher_in_a_thread_of_its_own(monkeypatch):
    warmed = []
    monkeypatch.setattr(worker.queue, "warm_publisher",
                        lambda settings: warmed.append((settings, threading.current_thread().name)))
    gunicorn_config.post_worker_init(object()).join(5)
    assert warmed == [(gunicorn_config._settings, "warm-publisher")]
