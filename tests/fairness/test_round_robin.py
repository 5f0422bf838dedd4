"""The round-robin queue, client names and metric labels behind fair sharing, on their own."""

from __future__ import annotations

import pytest

from service_kit.http.auth import ApiKeys
from service_kit.http.fairness import (
    ANONYMOUS,
    OTHER,
    ClientLabels,
    RoundRobin,
    key_identity,
    resolve_client,
    round_robin,
)


def client_of(item: str) -> str:
    return item[0]


def test_round_robin_queue_takes_clients_in_turn_each_in_its_own_order() -> None:
    queue: RoundRobin[str] = RoundRobin(client_of)
    for item in ["a1", "a2", "a3", "a4", "b1", "c1", "b2"]:
        queue.append(item)
    assert len(queue) == 7
    assert [queue.popleft() for _ in range(7)] == ["a1", "b1", "c1", "a2", "b2", "a3", "a4"]
    assert not queue
    with pytest.raises(IndexError):
        queue.popleft()


def test_a_newcomer_waits_at_most_one_item_of_a_client_already_queued() -> None:
    queue: RoundRobin[str] = RoundRobin(client_of)
    for i in range(5):
        queue.append(f"a{i}")
    assert queue.popleft() == "a0"
    queue.append("b0")
    assert [queue.popleft() for _ in range(2)] == ["a1", "b0"]


def test_remove_and_depths_follow_the_per_client_queues() -> None:
    queue: RoundRobin[str] = RoundRobin(client_of)
    for item in ["a1", "b1", "a2"]:
        queue.append(item)
    assert queue.depths() == {"a": 2, "b": 1}
    queue.remove("b1")
    assert "b1" not in queue and queue.depths() == {"a": 2}
    assert list(queue) == ["a1", "a2"]
    queue.clear()
    assert len(queue) == 0 and queue.depths() == {}


def test_round_robin_interleaves_a_list_by_client() -> None:
    assert round_robin(["a1", "a2", "a3", "b1"], client_of) == ["a1", "b1", "a2", "a3"]


def test_client_is_the_key_digest_when_keys_are_on_never_the_key() -> None:
    keys = ApiKeys(["secret-one", "secret-two"])
    headers = {b"authorization": b"Bearer secret-two", b"x-editbench-client": b"alice/run"}
    name = resolve_client(headers, keys)
    assert name == key_identity("secret-two") and "secret" not in name
    assert resolve_client(headers, ApiKeys([])) == "alice/run"
    assert resolve_client({}, ApiKeys([])) == ANONYMOUS
    assert resolve_client({b"x-editbench-client": b"bob/r un\n"}, ApiKeys([])) == "bob/r_un"


def test_client_labels_name_at_most_the_limit_and_fold_the_rest() -> None:
    labels = ClientLabels(limit=2)
    assert [labels(c) for c in ["a", "b", "c", "a"]] == ["a", "b", OTHER, "a"]
    assert labels.depths({"c": 3, "d": 1}) == {"a": 0, "b": 0, OTHER: 4}
