"""A session's record (session.json): jobs are closed by their own run folder, and a restart after a crash marks
the jobs it cut off as failed and empties their run folders, leaving finished runs as they are."""

from __future__ import annotations

from DrasCLRSlicerWeb import records


def test_a_job_is_closed_by_its_own_run_folder(tmp_path):
    records.create(tmp_path, "s1", "alice")
    for run in ("analysis-001", "analysis-002"):
        (tmp_path / run).mkdir()
        records.job_started(tmp_path, "analysis", tmp_path / run)
    records.job_ended(tmp_path, "analysis-001", "done", "analysis finished in 9 s")  # the older one ends last
    jobs = records.read(tmp_path)["jobs"]
    assert [(j["run"], j["status"]) for j in jobs] == [("analysis-001", "done"), ("analysis-002", "running")]


def test_recover_fails_cut_off_jobs_and_empties_only_their_folders(tmp_path):
    records.create(tmp_path, "s1", "alice")
    done, cut = tmp_path / "analysis-001", tmp_path / "analysis-002"
    for run in (done, cut):
        (run / "output").mkdir(parents=True)
        (run / "output" / "stats.csv").write_text("x")
        records.job_started(tmp_path, "analysis", run)
    records.job_ended(tmp_path, done.name, "done", "")
    (cut / ".output.tmp-1234").mkdir()  # a killed engine's staging folder
    message = records.recover(tmp_path)
    assert "server stopped during this analysis" in message
    assert list(cut.iterdir()) == [] and (done / "output" / "stats.csv").is_file()
    assert [j["status"] for j in records.read(tmp_path)["jobs"]] == ["done", "failed"]
    assert records.recover(tmp_path) == ""  # nothing left to recover
