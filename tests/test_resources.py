"""What the machine has for an edit: the lower of the computer's available memory and what a control group's limit
leaves (cgroup v2 and v1, the tightest group above counting)."""

from __future__ import annotations

from ccedit import resources


def _fake_cgroup(root, files: dict[str, str], membership: str):
    """A cgroup file tree under `root` (path -> content) and the `/proc/self/cgroup` that places the process in it."""
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    (root / "self_cgroup").write_text(membership)
    return root, root / "self_cgroup"


def test_the_cgroup_limit_is_read_for_v2_and_v1_and_the_tightest_group_above_counts(tmp_path):
    v2 = _fake_cgroup(tmp_path / "v2", {
        "kubepods/pod/memory.max": "2500000000\n", "kubepods/pod/memory.current": "1000000000\n",
        "kubepods/pod/memory.stat": "anon 700000000\ninactive_file 200000000\n",
        "kubepods/memory.max": "max\n", "kubepods/memory.current": "1000000000\n",
    }, "0::/kubepods/pod\n")
    assert resources.cgroup_available_memory(*v2) == 2_500_000_000 - (1_000_000_000 - 200_000_000)
    (tmp_path / "v2" / "kubepods" / "memory.max").write_text("1200000000\n")  # a tighter limit one level up
    assert resources.cgroup_available_memory(*v2) == 200_000_000
    v1 = _fake_cgroup(tmp_path / "v1", {
        "memory/memory.limit_in_bytes": "9223372036854771712\n", "memory/memory.usage_in_bytes": "5000000000\n",
        "memory/docker/abc/memory.limit_in_bytes": "2684354560\n",
        "memory/docker/abc/memory.usage_in_bytes": "684354560\n",
        "memory/docker/abc/memory.stat": "cache 1000\ntotal_inactive_file 84354560\n",
    }, "12:pids:/docker/abc\n4:memory:/docker/abc\n0::/\n")
    assert resources.cgroup_available_memory(*v1) == 2_684_354_560 - 600_000_000
    unlimited = _fake_cgroup(tmp_path / "none", {"memory.max": "max\n", "memory.current": "5\n"}, "0::/\n")
    assert resources.cgroup_available_memory(*unlimited) is None
    assert resources.cgroup_available_memory(tmp_path / "absent", tmp_path / "absent" / "cgroup") is None
    # the guard's figure is the lower of the computer's and the group's
    assert resources.available_host_memory(*v2) == 200_000_000
