"""Moves this process's wall clock ahead when LESFOCUS_TEST_CLOCK_SHIFT_DAYS is set (tests only).

`scripts/run-tests` puts this folder on PYTHONPATH for its clock-shifted runs of the unit tests,
so that every Python process of such a run (pytest and the agents and servers it starts) reads a
wall clock N days ahead. A test that pins a date and then lets the code read the real clock
fails under it; a test that passes today and fails then depends on the date.

Why not libfaketime: Debian's faketime 0.9.10 makes `time.sleep` fail with EINVAL when the
monotonic clock is left alone (FAKETIME_DONT_FAKE_MONOTONIC=1), and hangs `threading.Event.wait`
when it is faked, so threaded tests break for reasons of its own. time-machine replaces the
wall-clock functions (time.time, datetime.now, ...) inside Python and leaves time.monotonic and
every timed wait alone.
"""

import os

_days = os.environ.get("LESFOCUS_TEST_CLOCK_SHIFT_DAYS")
if _days:
    import datetime as _datetime
    import time as _time

    import time_machine as _time_machine

    _target = _time.time() + float(_days) * 86400
    # tick=True: the shifted clock keeps running, as a real one does.
    _time_machine.travel(_datetime.datetime.fromtimestamp(_target, _datetime.timezone.utc),
                         tick=True).start()
