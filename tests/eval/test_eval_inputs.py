"""`ccedit eval` on bad input: one line naming what is wrong; an absent video fails its items and the run goes on."""

import json

import pytest
import yaml

from ccedit.cli import main
from ccedit.errors import UserError
from ccedit.eval import load_eval_config
from ccedit.eval.benchmark import read_benchmark
from ccedit.eval.config import BenchmarkConfig
from tests.conftest import BALANCECC, VIDEOS



def one_error_line(capsys) -> str:
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, errors
    return errors[0]


def write_config(tmp_path, benchmark, **changes) -> str:
    """A fast evaluation: the unedited clips as a results folder, 2 frames at 32x32, one tiny metric."""
    config = {
        "output": str(tmp_path / "out"),
        "benchmark": {"path": str(benchmark), "videos": str(VIDEOS)},
        "video": {"num_frames": 2, "height": 32, "width": 32},
        "methods": [{"name": "source", "type": "folder",
                     "options": {"root": str(VIDEOS), "pattern": "{video}.mp4"}}],
        "metrics": {"clip_frame": {"model": "tiny"}},
    }
    for key, value in changes.items():
        config[key] = value
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def small_benchmark(tmp_path, videos=("kitten",), edits=1) -> str:
    data = [v for v in json.loads(BALANCECC.read_text()) if v["Video Name"] in videos]
    for v in data:
        v["Editing"] = v["Editing"][:edits]
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(data))
    return path


def test_a_benchmark_that_is_not_json_is_named_with_its_line(tmp_path, capsys):
    bad = tmp_path / "bench.json"
    bad.write_text('[{"Video Name": "kitten",,}]')
    assert main(["eval", write_config(tmp_path, bad)]) == 2
    line = one_error_line(capsys)
    assert "is not valid JSON (line 1, column" in line and str(bad) in line


def test_a_missing_field_names_the_item_and_the_field(tmp_path):
    data = json.loads(BALANCECC.read_text())
    del data[1]["Editing"][2]["Target Prompt"]
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match="video 'kitten', edit 3: field \"Target Prompt\" is missing"):
        read_benchmark(BenchmarkConfig(path=str(path), videos="v"))
    del data[0]["Video Name"]
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match="video 1: field \"Video Name\" is missing"):
        read_benchmark(BenchmarkConfig(path=str(path), videos="v"))


def test_loveu_style_sheets_give_one_item_per_edit_column(tmp_path):
    sheet = tmp_path / "loveu.csv"
    sheet.write_text("Video name,Our GT caption,Style Change Caption,Object Change Caption,Notes\n"
                     "kitten,a kitten,a kitten in watercolor,a puppy,x\n,,,,\n"
                     "sailboat,a boat,,a pirate ship,\n")
    items = read_benchmark(BenchmarkConfig(format="loveu_csv", path=str(sheet), videos="v"))
    assert [(i.video, i.editing_type, i.target_prompt) for i in items] == [
        ("kitten", "Style Change", "a kitten in watercolor"), ("kitten", "Object Change", "a puppy"),
        ("sailboat", "Object Change", "a pirate ship")]
    assert items[0].source_prompt == "a kitten"
    with pytest.raises(UserError, match="has no column 'nope'"):
        read_benchmark(BenchmarkConfig(format="loveu_csv", path=str(sheet), videos="v", video_column="Video name",
                                       source_column="nope"))


def test_unknown_metrics_and_method_types_list_the_valid_ones(tmp_path):
    bench = small_benchmark(tmp_path)
    with pytest.raises(UserError, match="unknown metric 'clip_textt': choose from .*clip_text, .*warp_error"):
        load_eval_config(write_config(tmp_path, bench, metrics={"clip_textt": {}}))
    methods = [{"name": "x", "type": "tokenflow"}]
    expected = r"methods\[0\] \(x\): unknown method type 'tokenflow': choose one of .*ccedit.*folder"
    with pytest.raises(UserError, match=expected):
        load_eval_config(write_config(tmp_path, bench, methods=methods))
    with pytest.raises(UserError, match="results pattern '{vid}.mp4': use fields video, edit"):
        from ccedit.eval.runner import build_methods

        bad = [{"name": "x", "type": "folder", "options": {"root": str(VIDEOS), "pattern": "{vid}.mp4"}}]
        build_methods(load_eval_config(write_config(tmp_path, bench, methods=bad)))


def test_an_absent_video_fails_its_items_and_the_run_goes_on(tmp_path, capsys):
    data = json.loads(small_benchmark(tmp_path, edits=2).read_text())
    data.append({**data[0], "Video Name": "ghost"})
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps(data))
    config = write_config(tmp_path, bench)
    assert main(["eval", config, "--no-progress"]) == 1  # rows failed: not a clean run
    assert "2 failed" in capsys.readouterr().out
    rows = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    status = {r["item"]: (r["status"], r["error"]) for r in rows}
    assert status["kitten/0"] == ("ok", None) and status["kitten/1"][0] == "ok"
    assert status["ghost/0"][0] == "failed" and "ghost.mp4" in status["ghost/0"][1]
    summary = (tmp_path / "out" / "summary.csv").read_text().splitlines()
    assert summary[1].startswith("source,all,all,all,2,2,")
    assert "failed: " in (tmp_path / "out" / "report.html").read_text()


def test_an_output_holding_results_of_other_settings_is_refused_without_overwrite(tmp_path, capsys):
    bench = small_benchmark(tmp_path)
    assert main(["eval", write_config(tmp_path, bench), "--no-progress"]) == 0
    other = write_config(tmp_path, bench, metrics={"clip_frame_consecutive": {"model": "tiny"}})
    assert main(["eval", other, "--no-progress"]) == 2
    line = one_error_line(capsys)
    assert "holds results of a different evaluation (its eval.json has other metrics.clip_frame" in line
    assert "--overwrite" in line
    assert main(["eval", other, "--no-progress", "--overwrite"]) == 0
    (row,) = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert list(row["scores"]) == ["clip_frame_consecutive"]
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "notes.txt").write_text("mine")
    assert main(["eval", other, f"output={tmp_path / 'elsewhere'}"]) == 2
    assert "is not empty and holds no evaluation" in one_error_line(capsys)


def test_overwrite_leaves_a_folder_that_holds_no_evaluation_untouched(tmp_path, capsys):
    """`--overwrite` replaces an earlier evaluation, never a folder of other files that carry the same names."""
    bench = small_benchmark(tmp_path)
    folder = tmp_path / "out"
    (folder / "media").mkdir(parents=True)
    (folder / "media" / "holiday.mp4").write_text("mine")
    for name in ("report.html", "results.jsonl", "summary.csv"):
        (folder / name).write_text("mine")
    (folder / "eval.json").write_text('{"project": "someone else\'s evaluation"}')  # not one ccedit wrote
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert main(["eval", write_config(tmp_path, bench), "--no-progress", "--overwrite"]) == 2
    line = one_error_line(capsys)
    assert "holds no evaluation" in line and str(folder) in line
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before


def test_a_second_evaluation_into_the_same_folder_is_refused(tmp_path, capsys):
    import fcntl
    import os

    bench = small_benchmark(tmp_path)
    folder = tmp_path / "out"
    folder.mkdir()
    fd = os.open(folder, os.O_RDONLY)  # the lock a running evaluation holds on its folder
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert main(["eval", write_config(tmp_path, bench), "--no-progress"]) == 2
        assert "another ccedit eval is writing into" in one_error_line(capsys)
        assert list(folder.iterdir()) == []
    finally:
        os.close(fd)
    assert main(["eval", write_config(tmp_path, bench), "--no-progress"]) == 0


@pytest.mark.parametrize("name", ["/usr", "../videos/kitten", "~/kitten", "kitten/../../etc"])
def test_a_video_name_outside_the_videos_folder_is_refused_before_anything_is_read(tmp_path, capsys, monkeypatch,
                                                                                    name):
    import ccedit.eval.results as results

    monkeypatch.setattr(results, "file_fingerprint", lambda path: pytest.fail(f"{path} should not be read"))
    data = json.loads(small_benchmark(tmp_path).read_text())
    data[0]["Video Name"] = name
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps(data))
    assert main(["eval", write_config(tmp_path, bench), "--no-progress"]) == 2
    line = one_error_line(capsys)
    assert f"video name {name!r} is not a name inside benchmark.videos" in line


def test_a_results_pattern_leading_outside_its_folder_is_refused(tmp_path, capsys):
    from ccedit.config import VideoConfig
    from ccedit.methods.folder import ResultsFolderMethod

    for pattern in ("/etc/{video}.mp4", "../{video}.mp4", "{video}/../../{edit}.mp4", "~/{video}.mp4"):
        with pytest.raises(UserError, match="leads outside the results folder"):
            ResultsFolderMethod(VideoConfig(), str(tmp_path), pattern)
    method = ResultsFolderMethod(VideoConfig(), str(tmp_path), "{prompt}/{edit}.mp4")
    assert method.path({"prompt": "a cat", "edit": 0}) == tmp_path / "a cat" / "0.mp4"
    with pytest.raises(UserError, match="leads outside the results folder"):
        method.path({"prompt": "../../secret", "edit": 0})


def test_a_frame_folders_fingerprint_reads_its_frames_only(tmp_path):
    from ccedit.io.fingerprint import file_fingerprint

    folder = tmp_path / "clip"
    (folder / "notes").mkdir(parents=True)
    for i in range(2):
        (folder / f"{i:05d}.png").write_bytes(bytes([i]) * 10)
    first = file_fingerprint(folder)
    (folder / "notes" / "big.bin").write_bytes(b"\0" * 4096)  # not a frame: not read
    (folder / "notes" / "00009.png").write_bytes(b"x")  # a subfolder's images are not frames either
    assert file_fingerprint(folder) == first
    (folder / "00001.png").write_bytes(b"changed")
    assert file_fingerprint(folder) != first
