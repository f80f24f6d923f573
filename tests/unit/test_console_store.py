"""The console's store (SQLite) and logins, without a browser or Kafka."""

from __future__ import annotations

from pathlib import Path

from detector.console.store import Store
from detector.console.users import add_user, check


def alert(i: int, stream: str = "card-1", severity: str = "warning") -> dict[str, object]:
    return {"alert_id": f"v:e{i}", "stream_id": stream, "severity": severity, "score": 1.0 + i,
            "detected_at": f"2027-01-01T00:00:{i:02d}.000Z", "threshold": 1.0, "top_features": []}  # fmt: skip


def test_alerts_are_kept_once_and_listed_newest_first_with_filters(tmp_path: Path) -> None:
    db = Store(tmp_path / "c.sqlite")
    assert db.add_alert(alert(1)) and not db.add_alert(alert(1))  # an at-least-once duplicate collapses
    db.add_alert(alert(2, "card-2", "critical"))
    db.add_alert(alert(3))
    rows, total = db.alerts(None, None, None, 0, 2)
    assert total == 3 and [r["alert_id"] for r in rows] == ["v:e3", "v:e2"]
    assert [r["alert_id"] for r in db.alerts(None, None, None, 1, 2)[0]] == ["v:e1"]
    assert [r["alert_id"] for r in db.alerts("critical", None, None, 0, 10)[0]] == ["v:e2"]
    db.add_verdict("v:e3", "card-1", "legit", "ana", "<b>ok</b>", "2027-01-01T01:00:00Z")
    assert [r["alert_id"] for r in db.alerts(None, "open", "card-1", 0, 10)[0]] == ["v:e1"]
    assert db.alert("v:e3")["status"] == "legit"  # type: ignore[index]
    alerts, verdicts = db.stream_history("card-1")
    assert [a["alert_id"] for a in alerts] == ["v:e3", "v:e1"] and verdicts[0]["note"] == "<b>ok</b>"
    db.close()
    again = Store(tmp_path / "c.sqlite")  # kept on disk
    assert again.alerts(None, None, None, 0, 10)[1] == 3


def test_logins_are_hashed_and_checked(tmp_path: Path) -> None:
    users = tmp_path / "users"
    add_user(users, "ana", "correct horse")
    add_user(users, "bob", "battery staple")
    assert "correct horse" not in users.read_text() and users.stat().st_mode & 0o077 == 0
    assert check(users, "ana", "correct horse") and check(users, "bob", "battery staple")
    assert not check(users, "ana", "battery staple") and not check(users, "eve", "correct horse")
    add_user(users, "ana", "new one")  # replaced, not duplicated
    assert check(users, "ana", "new one") and not check(users, "ana", "correct horse")
    assert users.read_text().count("ana:") == 1
