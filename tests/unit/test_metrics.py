"""The metric registry names every key the tasks log, for the tasks that log it."""

import json
from collections import defaultdict

import pytest

from normexp import metrics
from normexp.tracking.store import profile_dir
from tests.helpers import REPO


def committed_keys() -> dict[tuple[str, str], set[str]]:
    """{(task, "summary" | "per_epoch"): keys} over the committed runs of every profile."""
    keys: dict[tuple[str, str], set[str]] = defaultdict(set)
    for profile in ("quick", "standard"):
        for summary in (profile_dir(REPO / "results", profile) / "runs").glob("*/*/summary.json"):
            task = json.loads((summary.parent / "config.json").read_text())["train"]["task"]
            keys[task, "summary"] |= set(json.loads(summary.read_text()))
            epochs = summary.parent / "metrics.jsonl"
            for line in epochs.read_text().splitlines()[:1] if epochs.exists() else []:
                keys[task, "per_epoch"] |= set(json.loads(line))
    return keys


KEYS = committed_keys()


@pytest.mark.parametrize("task_kind", sorted(KEYS), ids="-".join)
def test_every_key_a_task_logs_is_registered_for_it(task_kind):
    task, kind = task_kind
    unregistered = KEYS[task_kind] - metrics.logged_by(task) - set(metrics.BOOKKEEPING)
    assert not unregistered, f"{task} logs unregistered metrics: {sorted(unregistered)}"
    if kind == "per_epoch":
        once = {k for k in KEYS[task_kind] if not metrics.METRICS[k].per_epoch}
        assert not once, f"{task} logs these every epoch, registered as summary only: {once}"


def test_a_metric_is_registered_once_and_a_typo_fails_where_it_is_named(monkeypatch):
    monkeypatch.setattr(metrics, "METRICS", dict(metrics.METRICS))
    with pytest.raises(ValueError, match="twice"):
        metrics.register_metric("test_acc", "fraction", "higher", ("classification",))
    with pytest.raises(ValueError, match="better must be one of"):
        metrics.register_metric("toy", "fraction", "up", ("classification",))
    with pytest.raises(KeyError, match="'tset_acc' is not a registered metric"):
        metrics.metric("tset_acc")
