from agent.status import Status, worst


def test_worst_is_by_severity_not_by_number() -> None:
    # UNKNOWN is exit code 3 but less severe than CRITICAL (2).
    assert worst([Status.UNKNOWN, Status.CRITICAL, Status.OK]) is Status.CRITICAL
    assert worst([Status.WARNING, Status.UNKNOWN]) is Status.UNKNOWN
    assert worst([Status.OK, Status.WARNING]) is Status.WARNING
    assert worst([]) is Status.OK


def test_exit_codes_follow_nagios() -> None:
    assert [s.exit_code for s in (Status.OK, Status.WARNING, Status.CRITICAL, Status.UNKNOWN)] == [0, 1, 2, 3]
