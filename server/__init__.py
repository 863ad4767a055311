"""lesfocus server: timetables, segments, exceptions, signed gateway policies, dashboard and API."""

__version__ = "0.1.0"
