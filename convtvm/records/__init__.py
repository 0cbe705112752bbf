"""Tuning records below the build: the log store (``log``), the verified best record of a workload
(``verify``) and the records a build applies when no log is named (``defaults``)."""
