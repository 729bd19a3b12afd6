"""Watchable (WatchLoc) and Waitable (WaitForReady), after the original's watchable/waitable tests."""

from __future__ import annotations

import asyncio

import pytest

from sax.admin.watch import Waitable, Watchable
from sax.errors import Code, SaxError
from sax.schemas import WatchResult

ID = "admin-1"


def apply(state: set[str], result: WatchResult) -> set[str]:
    if result.has_fullset:
        state = set(result.values)
    for m in result.changelog:
        if m.op == "add":
            state.add(m.address)
        else:
            state.discard(m.address)
    return state


async def test_every_start_seqno_converges_to_the_same_set() -> None:
    w = Watchable()
    history: list[set[str]] = [set()]  # history[k]: the set after k mutations
    current: set[str] = set()
    for i in range(300):
        current = current - {min(current)} if i % 3 == 2 else current | {f"a{i:03d}"}
        w.set_values(current)
        history.append(set(current))
    assert w.next_seqno == 300
    for start, state in enumerate(history):
        result = await w.watch(ID, ID, start, timeout_s=0.01)
        assert apply(set(state), result) == current
        assert result.next_seqno == 300


async def test_log_is_packed_and_old_seqnos_get_the_full_set() -> None:
    w = Watchable()
    for i in range(50):
        w.set_values({f"a{i}"})
    result = await w.watch(ID, ID, 0, timeout_s=0.01)
    assert result.has_fullset and result.values == ["a49"] and result.next_seqno == 99


async def test_mismatched_admin_id_gets_the_full_set_at_once() -> None:
    w = Watchable()
    w.set_values({"x:1"})
    result = await w.watch(ID, "old-admin", 1, timeout_s=5)
    assert (result.has_fullset, result.values, result.next_seqno) == (True, ["x:1"], 1)
    fresh = await Watchable().watch(ID, "", 0, timeout_s=5)
    assert fresh.has_fullset and fresh.values == [] and fresh.next_seqno == 0


async def test_seqno_ahead_of_the_log_gets_the_full_set() -> None:
    w = Watchable()
    w.set_values({"x:1"})
    result = await w.watch(ID, ID, 7, timeout_s=5)
    assert result.has_fullset and result.values == ["x:1"] and result.next_seqno == 1


async def test_watch_at_the_head_waits_for_a_change() -> None:
    w = Watchable()
    task = asyncio.create_task(w.watch(ID, ID, 0, timeout_s=5))
    await asyncio.sleep(0.02)
    assert not task.done()
    w.set_values({"x:1", "y:2"})
    result = await asyncio.wait_for(task, 1)
    assert apply(set(), result) == {"x:1", "y:2"} and result.next_seqno == 2
    w.set_values({"x:1"})
    delta = await w.watch(ID, ID, 2, timeout_s=5)
    assert not delta.has_fullset and [(m.op, m.address) for m in delta.changelog] == [
        ("del", "y:2")
    ]


async def test_bounded_wait_ends_in_a_valid_no_change_result() -> None:
    w = Watchable()
    w.set_values({"x:1"})
    result = await w.watch(ID, ID, 1, timeout_s=0.05)
    assert result == WatchResult(admin_id=ID, next_seqno=1)


async def test_setting_the_same_set_logs_nothing() -> None:
    w = Watchable()
    assert w.set_values({"x:1"})
    assert not w.set_values(["x:1"])
    assert w.next_seqno == 1


async def test_many_watchers_follow_to_the_final_set() -> None:
    w = Watchable()

    async def follower() -> set[str]:
        state: set[str] = set()
        seqno, admin = 0, ""
        while "DONE" not in state:
            r = await w.watch(ID, admin, seqno, timeout_s=1)
            admin, seqno, state = r.admin_id, r.next_seqno, apply(state, r)
        return state

    tasks = [asyncio.create_task(follower()) for _ in range(50)]
    current: set[str] = set()
    for i in range(300):
        current = current - {f"a{i - 5}"} | {f"a{i}"}
        w.set_values(current)
        if i % 20 == 0:
            await asyncio.sleep(0)
    w.set_values(current | {"DONE"})
    results = await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert all(r == current | {"DONE"} for r in results)


async def test_close_resets_current_and_future_watchers() -> None:
    w = Watchable()
    w.set_values({"x:1"})
    task = asyncio.create_task(w.watch(ID, ID, 1, timeout_s=5))
    await asyncio.sleep(0.01)
    w.close()
    reset = WatchResult(admin_id=ID, next_seqno=0, has_fullset=True)
    assert await asyncio.wait_for(task, 1) == reset
    assert await w.watch(ID, ID, 0, timeout_s=5) == reset


async def test_waiters_return_when_their_threshold_is_reached() -> None:
    w = Waitable()
    waiters = [asyncio.create_task(w.wait(t, timeout_s=5)) for t in range(10)]
    await asyncio.sleep(0.01)
    assert waiters[0].done() and not any(t.done() for t in waiters[1:])
    w.set(5)
    await asyncio.sleep(0.01)
    assert all(t.done() for t in waiters[:6]) and not any(t.done() for t in waiters[6:])
    w.set(9)
    assert await asyncio.wait_for(asyncio.gather(*waiters), 1) == [0] + [5] * 5 + [9] * 4


async def test_wait_times_out_and_close_cancels() -> None:
    w = Waitable()
    w.set(1)
    with pytest.raises(SaxError) as err:
        await w.wait(2, timeout_s=0.02)
    assert err.value.code == Code.DEADLINE_EXCEEDED and "1 of 2" in err.value.message
    task = asyncio.create_task(w.wait(3, timeout_s=5))
    await asyncio.sleep(0.01)
    w.close()
    with pytest.raises(SaxError) as err:
        await task
    assert err.value.code == Code.CANCELLED
