"""mnemo.Sync: references to the sync engine."""

from __future__ import annotations

import pytest

import mnemo


def test_sync_reference_lifecycle(inst: mnemo.Instance) -> None:
    inst.enable_sync()
    sync = inst.sync
    assert not sync.closed
    sync.close()
    sync.close()
    assert sync.closed


def test_sync_context_manager(inst: mnemo.Instance) -> None:
    inst.enable_sync()
    with inst.sync as sync:
        assert isinstance(sync, mnemo.Sync)
    assert sync.closed


def test_sync_outlives_instance_and_other_references() -> None:
    inst = mnemo.Instance.open("memory:")
    inst.enable_sync()
    refs = [inst.sync for _ in range(3)]
    refs[0].close()
    inst.close()
    for r in refs[1:]:
        r.close()


def test_sync_after_close_of_instance_raises(inst: mnemo.Instance) -> None:
    inst.close()
    with pytest.raises(mnemo.InvalidArgument):
        _ = inst.sync
