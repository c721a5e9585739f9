"""The "Send test job" dialog (gui/test_job.py): the answer streams in with its token count
and time, a failure is shown, and test jobs are not earnings."""

from __future__ import annotations

import pytest

from tests.gui.conftest import Rig, run

pytestmark = pytest.mark.gui


def test_test_job_streams_the_answer_with_tokens_and_time(rig: Rig) -> None:
    dialog = rig.controller.open_test_job()
    assert dialog is not None and dialog.model.count() == 2
    dialog.model.setCurrentIndex(dialog.model.findData("beta"))
    chunks: list[str] = []
    dialog.output.textChanged.connect(lambda: chunks.append(dialog.output.toPlainText()))
    task = dialog.send()
    assert task is not None and not dialog.send_button.isEnabled()
    run(rig.loop, task)
    expected = rig.fake.expected_text(rig.fake.output_tokens)
    assert dialog.answer == expected == dialog.output.toPlainText()
    assert len(chunks) > 1  # it arrived in pieces, not at the end
    stats = dialog.stats.text()
    assert f"{rig.fake.output_tokens} output tokens" in stats and "Done:" in stats
    assert dialog.send_button.isEnabled()
    assert rig.controller.today_summary()[0] == 0  # test jobs are not earnings

    dialog.format.setCurrentIndex(dialog.format.findData("anthropic"))
    run(rig.loop, dialog.send())
    assert dialog.answer == expected


def test_test_job_failure_is_shown(rig: Rig) -> None:
    dialog = rig.controller.open_test_job()
    run(rig.loop, rig.fake.set_fail_mode("error_status"))
    run(rig.loop, dialog.send())
    assert dialog.stats.text().startswith("Failed:")
