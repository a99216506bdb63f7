"""The run directory's rules (solver/outputs/rundir.py): only pontryx runs are
resumed or overwritten, only pontryx's own files are deleted, never through a
symbolic link, an overwrite never leaves a half-deleted run, a second run into
the same directory fails at once, and bad paths are one-line errors."""

import os

import pytest

from pontryx.meshes import InputError
from pontryx.solver.outputs.rundir import MARKER, RunDirectory, check_run_directory

pytestmark = pytest.mark.serial  # the file system of one process


def _run(path, *names):
    """A finished pontryx run in ``path`` with ``names`` written."""
    rd = RunDirectory(path)
    rd.open("fresh")
    for name in names:
        target = path / name
        if name in ("checkpoints", "plots", "paraview"):
            target.mkdir(exist_ok=True)
            (target / "inside.txt").write_text(name)
        else:
            target.write_text(name)
    rd.register(*names)
    rd.close()
    return rd


def test_modes_and_messages(tmp_path):
    new = tmp_path / "run"
    assert check_run_directory(new, resume=False, overwrite=False) == "fresh"
    new.mkdir()
    assert check_run_directory(new, resume=True, overwrite=False) == "fresh"  # empty
    _run(new, "config.yaml", "metrics.csv")
    with pytest.raises(InputError, match=r"^directory: .*not empty; use --resume.*--overwrite"):
        check_run_directory(new, resume=False, overwrite=False)
    with pytest.raises(InputError, match=r"^resume: resume and overwrite exclude"):
        check_run_directory(new, resume=True, overwrite=True)
    assert check_run_directory(new, resume=True, overwrite=False) == "resume"
    assert check_run_directory(new, resume=False, overwrite=True) == "overwrite"


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda t: (t / "f").write_text("x") and t / "f", "exists and is not a directory"),
        (lambda t: (t / "f").write_text("x") and t / "f" / "sub", "is not a directory"),
    ],
)
def test_bad_paths_are_one_line(tmp_path, make, needle):
    path = make(tmp_path)
    with pytest.raises(InputError, match=needle) as e:
        RunDirectory(path).check(resume=False, overwrite=False)
    assert "\n" not in str(e.value)


def test_foreign_directories_are_refused_for_resume_and_overwrite(tmp_path):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "config.yaml").write_text("not pontryx's")
    (d / "figure1.png").write_text("png")
    for flags in ({"resume": True, "overwrite": False}, {"resume": False, "overwrite": True}):
        with pytest.raises(InputError, match="not a pontryx run directory"):
            check_run_directory(d, **flags)
    assert sorted(p.name for p in d.iterdir()) == ["config.yaml", "figure1.png"]


def test_overwrite_deletes_only_what_pontryx_wrote(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    _run(run, "config.yaml", "summary.json", "checkpoints", "plots")
    (run / "checkpoints" / "my-annotations.txt").write_text("keep?")  # inside ours: goes
    (run / "notes.txt").write_text("mine")  # not listed: stays
    rd = RunDirectory(run)
    assert rd.check(resume=False, overwrite=True) == "overwrite"
    rd.open("overwrite")
    # the old run is moved aside in one piece until the new one has started
    assert (run / ".pontryx" / "replaced" / "summary.json").exists()
    assert not (run / "summary.json").exists() and (run / "notes.txt").read_text() == "mine"
    rd.discard_replaced()
    rd.close()
    assert sorted(p.name for p in run.iterdir()) == [".pontryx", "notes.txt"]


def test_symbolic_links_are_never_followed(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.png").write_text("png")
    run = tmp_path / "run"
    run.mkdir()
    _run(run, "config.yaml", "summary.json")
    os.symlink(elsewhere, run / "plots")
    with pytest.raises(InputError, match="is a symbolic link"):
        check_run_directory(run, resume=False, overwrite=True)
    link = tmp_path / "link"
    os.symlink(run, link)
    with pytest.raises(InputError, match="is a symbolic link"):
        check_run_directory(link, resume=True, overwrite=False)
    assert (elsewhere / "precious.png").read_text() == "png"
    assert (run / "summary.json").exists()


def test_a_second_run_into_the_same_directory_fails_at_once(tmp_path):
    run = tmp_path / "run"
    first = RunDirectory(run)
    first.open("fresh")
    second = RunDirectory(run)
    with pytest.raises(InputError, match="another pontryx run is writing"):
        second.open("resume")
    first.close()
    second.open("resume")  # free again
    second.close()


def test_marker_lists_written_entries_and_legacy_runs_are_recognised(tmp_path):
    run = tmp_path / "run"
    rd = _run(run, "config.yaml", "model.npz")
    assert {"config.yaml", "model.npz"} <= set(rd.listed()) and (run / MARKER).is_file()
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "config.yaml").write_text("# Resolved configuration (x), written by pontryx 0.1\n")
    (legacy / "summary.json").write_text("{}")
    assert RunDirectory(legacy).is_run()
    assert set(RunDirectory(legacy).listed()) == {"config.yaml", "summary.json"}


def test_stale_temporaries_are_removed(tmp_path):
    """Those pontryx's atomic writes leave (``.NAME.PID.tmp`` of its own entries,
    anything of that form inside its own folders), and no ``.tmp`` of a user's."""
    run = tmp_path / "run"
    rd = _run(run, "config.yaml", "checkpoints")
    ours = [".model.npz.1234.tmp", ".pontryx/.run.json.77.tmp", "checkpoints/.state.npz.5.tmp"]
    theirs = [".draft.tmp", ".vimrc.tmp", ".notes.txt.12.tmp", "mine/.draft.1.tmp"]
    (run / "mine").mkdir()
    for name in ours + theirs:
        (run / name).write_text("half")
    rd.remove_stale_temporaries()
    assert not [name for name in ours if (run / name).exists()]
    assert all((run / name).read_text() == "half" for name in theirs)


def test_a_pontryx_folder_that_is_a_link_is_refused(tmp_path):
    """``.pontryx`` holds the marker and the lock: a link there would make pontryx
    write (and an overwrite move files) elsewhere; resume, overwrite and analyze's
    attach refuse it."""
    run = tmp_path / "run"
    _run(run, "config.yaml", "summary.json")
    elsewhere = tmp_path / "elsewhere"
    os.replace(run / ".pontryx", elsewhere)
    os.symlink(elsewhere, run / ".pontryx")
    before = (elsewhere / "run.json").read_text()
    for resume in (True, False):
        with pytest.raises(InputError, match=r"\.pontryx' is a symbolic link"):
            check_run_directory(run, resume=resume, overwrite=not resume)
    with pytest.raises(InputError, match="is a symbolic link"):
        RunDirectory(run).attach("analysis")
    assert (elsewhere / "run.json").read_text() == before
    (run / ".pontryx").unlink()
    os.replace(elsewhere, run / ".pontryx")
    (run / ".pontryx" / "lock").unlink(missing_ok=True)
    os.symlink(tmp_path / "outside", run / ".pontryx" / "lock")  # the lock is not followed
    with pytest.raises(InputError, match="lock': a symbolic link"):
        RunDirectory(run).open("resume")
    assert not (tmp_path / "outside").exists()


def _listing(path):
    """Every entry below ``path`` with its kind and contents (byte-identical check)."""
    out = {}
    for p in sorted(path.rglob("*")):
        if p.name == "lock":
            continue
        out[str(p.relative_to(path))] = p.read_bytes() if p.is_file() else p.is_dir()
    return out


@pytest.mark.parametrize(
    "written",
    [
        "[1, 2]",
        '{"written": "config.yaml"}',
        '{"written": ["."]}',
        '{"written": [""]}',
        '{"written": [".pontryx"]}',
        '{"written": [".."]}',
        '{"written": ["/etc"]}',
        '{"written": ["plots/"]}',
        '{"written": ["notes.txt"]}',
        '{"written": [3]}',
        "\xff\x00 not json",
    ],
)
def test_a_marker_pontryx_did_not_write_is_refused_whole(tmp_path, written):
    """The marker decides what an overwrite deletes: a marker that is not a JSON
    object listing names of pontryx's own entries refuses the directory (exit 2
    naming the marker), for --overwrite and --resume, and nothing is touched."""
    run = tmp_path / "run"
    _run(run, "config.yaml", "summary.json", "checkpoints")
    (run / "notes.txt").write_text("mine")
    (run / MARKER).write_bytes(written.encode("latin-1"))
    before = _listing(run)
    for mode in ("overwrite", "resume"):
        with pytest.raises(InputError, match=rf"^{mode}: .*run\.json") as e:
            RunDirectory(run).check(resume=mode == "resume", overwrite=mode == "overwrite")
        assert "\n" not in str(e.value)
    assert _listing(run) == before and not (run / ".pontryx" / "replaced").exists()


def test_entries_of_the_wrong_kind_are_refused_before_anything_is_written(tmp_path):
    """A file where pontryx writes a folder (checkpoints) or a folder where it writes
    a file (metrics.jsonl): refused for --resume and --overwrite, listed by the
    marker or not — it is not what pontryx wrote, and an overwrite would delete it
    (a user's folder of files at metrics.jsonl was lost)."""
    run = tmp_path / "run"
    _run(run, "config.yaml", "metrics.jsonl", "checkpoints")
    (run / "checkpoints" / "inside.txt").unlink()
    (run / "checkpoints").rmdir()
    (run / "checkpoints").write_text("x")
    for flags in ({"resume": True, "overwrite": False}, {"resume": False, "overwrite": True}):
        with pytest.raises(InputError, match=r"^directory: .*checkpoints' is not a folder"):
            check_run_directory(run, **flags)
    (run / "checkpoints").unlink()
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").mkdir()
    (run / "metrics.jsonl" / "mine.txt").write_text("precious")
    with pytest.raises(InputError, match=r"metrics.jsonl' is not a regular file"):
        check_run_directory(run, resume=False, overwrite=True)
    assert (run / "metrics.jsonl" / "mine.txt").read_text() == "precious"
    (run / "metrics.jsonl" / "mine.txt").unlink()
    (run / "metrics.jsonl").rmdir()
    assert check_run_directory(run, resume=False, overwrite=True) == "overwrite"
    (run / "model.npz").mkdir()  # not listed: the new run would write into it
    for flags in ({"resume": True, "overwrite": False}, {"resume": False, "overwrite": True}):
        with pytest.raises(InputError, match=r"model.npz' is not a regular file"):
            check_run_directory(run, **flags)


def test_names_too_long_and_a_lock_in_the_way_are_one_line(tmp_path):
    for path in (tmp_path / ("x" * 300), tmp_path / "new" / ("x" * 300) / "run"):
        with pytest.raises(InputError, match=r"^directory: cannot (use|create) .*(long|bytes)"):
            check_run_directory(path, resume=False, overwrite=False)
    assert sorted(tmp_path.iterdir()) == []
    run = tmp_path / "run"
    _run(run, "config.yaml")
    (run / ".pontryx" / "lock").unlink()
    (run / ".pontryx" / "lock").mkdir()
    with pytest.raises(InputError, match=r"^directory: cannot open .*lock"):
        RunDirectory(run).open("resume")


def test_an_overwrite_clears_whatever_is_left_in_replaced(tmp_path):
    run = tmp_path / "run"
    _run(run, "config.yaml")
    (run / ".pontryx" / "replaced").write_text("a file left in the way")
    rd = RunDirectory(run)
    rd.open("overwrite")
    assert (run / ".pontryx" / "replaced" / "config.yaml").read_text() == "config.yaml"
    rd.discard_replaced()
    rd.close()


def test_entries_inside_the_folders_of_the_wrong_kind_are_refused(tmp_path):
    """check_contents: what a run will write inside plots/ and paraview/ is absent
    or of its kind, for an overwrite too (moving plots/ aside deleted a user's folder
    at plots/curves.png); a fresh directory holds nothing."""
    entries = {"plots/curves.png": False, "paraview/states.bp": True}
    run = tmp_path / "run"
    _run(run, "config.yaml", "plots", "paraview")
    rd = RunDirectory(run)
    rd.check_contents("resume", entries)  # absent
    (run / "plots" / "curves.png").mkdir()
    (run / "paraview" / "states.bp").write_text("x")
    with pytest.raises(InputError, match=r"^directory: .*plots/curves.png' is not a regular"):
        rd.check_contents("resume", entries)
    with pytest.raises(InputError, match=r"paraview/states.bp' is not a folder"):
        rd.check_contents("resume", {"paraview/states.bp": True})
    (run / "plots" / "curves.png" / "mine.txt").write_text("precious")
    with pytest.raises(InputError, match=r"plots/curves.png' is not a regular"):
        rd.check_contents("overwrite", entries)
    (run / "plots" / "curves.png" / "mine.txt").unlink()
    (run / "plots" / "curves.png").rmdir()
    (run / "plots" / "curves.png").symlink_to(run / "config.yaml")
    with pytest.raises(InputError, match=r"plots/curves.png' is not a regular file"):
        rd.check_contents("resume", entries)
    rd.register("config.yaml", "paraview")  # plots/ not listed: written into as it is
    assert "plots" not in rd.listed()
    with pytest.raises(InputError, match=r"plots/curves.png' is not a regular file"):
        RunDirectory(run).check_contents("overwrite", entries)
    RunDirectory(tmp_path / "new").check_contents("fresh", entries)


def test_a_marker_that_is_not_a_file_is_refused(tmp_path):
    """.pontryx/run.json as a folder (or a link): refused in one line (exit 2), not an
    error writing the run directory (exit 5) half-way."""
    run = tmp_path / "run"
    _run(run, "config.yaml", "metrics.jsonl")
    (run / MARKER).unlink()
    (run / MARKER).mkdir()
    for flags in ({"resume": True, "overwrite": False}, {"resume": False, "overwrite": True}):
        with pytest.raises(InputError, match=r"run.json' is not a regular file"):
            check_run_directory(run, **flags)
    assert (run / "metrics.jsonl").is_file()


def test_a_cut_overwrite_is_put_back_by_the_next_resume_or_overwrite(tmp_path):
    """An overwrite killed before its new run's first iteration leaves the old run in
    .pontryx/replaced/ (only a started run deletes it): the next --resume (which had
    started afresh and deleted it) or --overwrite first puts it back, the cut run's
    own entries gone; not while a run holds the lock."""
    for mode in ("resume", "overwrite"):
        run = tmp_path / mode
        _run(run, "config.yaml", "summary.json", "checkpoints")
        (run / "notes.txt").write_text("mine")
        cut = RunDirectory(run)
        cut.open("overwrite")  # the old run moved aside; then killed after one file
        (run / "config.yaml").write_text("the cut run's")
        cut.register("config.yaml")
        cut.close()
        assert not (run / "summary.json").exists()
        other = RunDirectory(run)
        other._lock()  # a run in progress: nothing is put back
        with pytest.raises(InputError, match="another pontryx run is writing"):
            RunDirectory(run).check(resume=mode == "resume", overwrite=mode == "overwrite")
        other.close()
        rd = RunDirectory(run)
        assert rd.check(resume=mode == "resume", overwrite=mode == "overwrite") == mode
        assert (run / "config.yaml").read_text() == "config.yaml"
        assert (run / "checkpoints" / "inside.txt").read_text() == "checkpoints"
        assert (run / "summary.json").exists() and (run / "notes.txt").read_text() == "mine"
        assert not (run / ".pontryx" / "replaced").exists()
        assert sorted(rd.listed()) == ["checkpoints", "config.yaml", "summary.json"]


def test_a_failed_move_aside_is_undone(tmp_path, monkeypatch):
    """A rename that fails while the old run is moved aside (a mount point: EBUSY)
    moves back what had moved: the old run stays whole (half of it had stayed in
    .pontryx/replaced/, and a --resume then deleted it)."""
    run = tmp_path / "run"
    _run(run, "config.yaml", "summary.json", "plots")
    real = os.replace

    def busy(src, dst):
        if str(src).endswith("plots"):
            raise OSError(16, "Device or resource busy", str(src))
        return real(src, dst)

    rd = RunDirectory(run)
    with monkeypatch.context() as m:
        m.setattr(os, "replace", busy)
        with pytest.raises(OSError, match="busy"):
            rd.open("overwrite")
    rd.close()
    assert sorted(p.name for p in run.iterdir()) == [
        ".pontryx", "config.yaml", "plots", "summary.json"
    ]  # fmt: skip
    assert not (run / ".pontryx" / "replaced").exists()


@pytest.mark.parametrize("inside", ["plots", "checkpoints/iter-00000099", ".pontryx"])
def test_a_run_inside_another_runs_own_folder_is_refused(tmp_path, inside):
    """--output inside plots/ or checkpoints/ of a run: an overwrite of that run would
    delete it whole (it was accepted without a word)."""
    run = tmp_path / "run"
    _run(run, "config.yaml", "plots", "checkpoints")
    with pytest.raises(InputError, match=r"inside .* of the pontryx run"):
        check_run_directory(run / inside / "sub", resume=False, overwrite=False)
    assert check_run_directory(tmp_path / "elsewhere" / "sub", resume=False, overwrite=False)


def test_a_failed_overwrite_removes_what_it_made_before_registering_it(tmp_path):
    """An overwrite that fails after making one of the old run's names but before
    registering it (hjb's paraview/ and plots/ while its outputs were written):
    putting the old run back removes it first (the move back had failed on the
    non-empty folder, exit 5, the old run left in .pontryx/replaced/)."""
    run = tmp_path / "run"
    _run(run, "config.yaml", "plots", "summary.json")
    rd = RunDirectory(run)
    rd.open("overwrite")
    (run / "plots").mkdir()
    (run / "plots" / "half.png").write_text("new")
    assert rd.restore_replaced()
    rd.close()
    assert (run / "plots" / "inside.txt").read_text() == "plots"
    assert not (run / "plots" / "half.png").exists()
    assert sorted(RunDirectory(run).listed()) == ["config.yaml", "plots", "summary.json"]


def test_a_path_without_room_for_pontryx_names_is_refused(tmp_path):
    """An --output near PATH_MAX failed half-way through the run (a checkpoint's
    temporary name too long: exit 5, a half-written run)."""
    deep = tmp_path.joinpath(*["x" * 200] * (4096 // 201))
    with pytest.raises(InputError, match="too long a path"):
        check_run_directory(deep, resume=False, overwrite=False)
    assert not (tmp_path / ("x" * 200)).exists()


def test_removing_a_new_run_keeps_another_runs_and_the_parents_it_did_not_make(tmp_path):
    """remove_new_run (a stopped fresh ``pontryx hjb``): a second run that lost the
    race for the lock deleted the first run's .pontryx/ (lock and marker: the first
    then failed, exit 5); the parent folders the run made stayed."""
    first = RunDirectory(tmp_path / "run")
    first.open(first.check(resume=False, overwrite=False))
    first.register("config.yaml")
    second = RunDirectory(tmp_path / "run")
    with pytest.raises(InputError, match="another pontryx run is writing"):
        second.open("fresh")
    second.remove_new_run()  # it took no lock: nothing of the first run's goes
    assert (tmp_path / "run" / MARKER).is_file()
    first.remove_new_run()
    assert not (tmp_path / "run").exists()
    (tmp_path / "keep").mkdir()
    nested = RunDirectory(tmp_path / "keep" / "a" / "b" / "run")
    nested.open(nested.check(resume=False, overwrite=False))
    nested.remove_new_run()
    assert list((tmp_path / "keep").iterdir()) == []  # a/, b/ and run/ went, keep/ stays
    empty = tmp_path / "empty"
    empty.mkdir()
    given = RunDirectory(empty)
    given.open(given.check(resume=False, overwrite=False))
    given.remove_new_run()
    assert empty.is_dir() and list(empty.iterdir()) == []
