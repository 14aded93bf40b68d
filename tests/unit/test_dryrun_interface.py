"""The dry-run store's interface is closed: every attribute of `Store` is classified as a
read (passed through), a write (answered, never made) or refused."""
import queue

from shoal.apiserver import dryrun
from shoal.apiserver.store import Store


def test_every_store_attribute_is_classified():
    public = {n for n in dir(Store) if not n.startswith("_")}
    unknown = public - dryrun.READS - dryrun.WRITES - dryrun.REFUSED
    assert not unknown, (f"classify {sorted(unknown)} in apiserver/dryrun.py: a read passes through, a write "
                         f"must be answered by DryRunStore without writing")
    assert not (dryrun.READS & dryrun.WRITES) and not (dryrun.READS & dryrun.REFUSED)
    for name in dryrun.WRITES:
        assert callable(getattr(dryrun.DryRunStore, name)), name


def test_unclassified_and_refused_attributes_are_not_passed_through():
    class Fake:
        def get(self, *a):
            return None

        def put_credential(self, *a):
            raise AssertionError("written")

    s = dryrun.DryRunStore(Fake())
    assert s.get("pods", None, "x") is None
    for name in ("put_credential", "compact", "something_new", "_write_ops"):
        try:
            getattr(s, name)
        except AttributeError as e:
            assert "dry run" in str(e)
        else:
            raise AssertionError(f"{name} passed through")


def test_the_view_sinks_every_queue_and_keeps_the_registry_intact():
    class Registry:
        def __init__(self):
            self.store = object()
            self._gc_queue = queue.Queue()
            self.other_queue = queue.Queue()
            self.enqueue = self.other_queue.put
            self.tokens = {"admin": "x"}

    real = Registry()
    view = dryrun.dry_run_view(real)
    view._gc_queue.put(("cascade", "u"))
    view.other_queue.put(1)
    view.enqueue(2)
    assert real._gc_queue.empty() and real.other_queue.empty()
    assert isinstance(view.store, dryrun.DryRunStore) and real.store is not view.store
    assert view.tokens is real.tokens
