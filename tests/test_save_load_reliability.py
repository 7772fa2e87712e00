"""Checkpoints that survive kills and bad files: atomic save, clear load errors, no needless unpickling,
all-or-nothing set_parameters."""

from __future__ import annotations

import copy
import io
import json
import os
import pathlib
import select
import signal
import struct
import subprocess
import sys
import time
import zipfile

import cloudpickle
import numpy as np
import pytest
import torch as th
from conftest import TINY_POLICY_KWARGS, params_equal, point_mass, small_kwargs
from stable_baselines3 import PPO

import sb3_meta.common.base_class as base_class
import sb3_meta.common.rng as rng
from sb3_meta import FOMAML, MAML, Reptile

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="the kill tests fork a saving process")

#: Run by :class:`KillServer` in a fresh interpreter: imports once, then forks one child per ``go`` command that
#: runs ``job(i)`` for i = start, start + 1, ... until the server SIGKILLs it after the given delay.
SERVER = r"""
import os, signal, sys, time, traceback
import torch
torch.set_num_threads(1)
exec(compile(open(sys.argv[1]).read(), sys.argv[1], "exec"))  # defines job(i)
sys.stdout.write("ready\n")
sys.stdout.flush()
for line in sys.stdin:
    words = line.split()
    if not words or words[0] == "quit":
        break
    start, delay = int(words[1]), float(words[2])
    pid = os.fork()
    if pid == 0:
        try:
            i = start
            while True:
                job(i)
                i += 1
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(1)
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)  # this process is the child's parent and has not reaped it: the pid is the child's
    _, status = os.waitpid(pid, 0)
    sys.stdout.write(f"{status}\n")
    sys.stdout.flush()
"""


class KillServer:
    """A subprocess that runs a job in a loop in forked children and SIGKILLs each after a delay.

    Importing torch and sb3_meta takes seconds; forking a process that has already done it takes milliseconds,
    so that many kills fit in a short test.
    """

    def __init__(self, setup: str, folder: pathlib.Path, *args: str) -> None:
        script = folder / "kill_setup.py"
        script.write_text(setup)
        self._stderr_path = folder / "kill_server.stderr"
        self._stderr = open(self._stderr_path, "wb")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(script), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
        )
        self._buffer = b""
        assert self._readline(120) == "ready"

    def _readline(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        fd, deadline = self.proc.stdout.fileno(), time.monotonic() + timeout
        while b"\n" not in self._buffer:
            ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0.0))
            chunk = os.read(fd, 4096) if ready else b""
            if not chunk:
                raise RuntimeError(f"the kill server stopped or hung; its stderr:\n{self._stderr_path.read_text()}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def run_and_kill(self, start: int, delay: float) -> None:
        """Run ``job(start), job(start + 1), ...`` in a child for ``delay`` seconds, then SIGKILL it."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"go {start} {delay}\n".encode())
        self.proc.stdin.flush()
        status = int(self._readline(60))
        # killed while running the job, not crashed before (a crash would make the test vacuous)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, self._stderr_path.read_text()

    def __enter__(self) -> KillServer:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(b"quit\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=20)
        except Exception:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()


SAVE_LOOP = """
import sys
from sb3_meta import FOMAML
from sb3_meta.envs import PointMassTasks

PATH = sys.argv[2]
model = FOMAML("MlpPolicy", PointMassTasks(max_episode_steps=10), meta_batch_size=2, fast_batch_size=2, seed=0,
               policy_kwargs=dict(net_arch=dict(pi=[16], vf=[])))


def job(i):
    model.num_timesteps = i  # which save a checkpoint comes from
    model.save(PATH)
"""

N_KILLS = 25


@needs_fork
def test_save_is_atomic_when_the_process_is_killed(tmp_path):
    """SIGKILL a process that saves to the same path in a loop, at random moments, N_KILLS times: after every
    kill the path holds a complete checkpoint (or nothing, before the first save ended), never an older one."""
    path = tmp_path / "model.zip"
    model = FOMAML("MlpPolicy", point_mass(), **small_kwargs())
    reference = model.meta_parameters()  # what the saver holds
    # Kill moments spread over a few saves' time as this machine takes it now (a loaded machine saves slower):
    # fixed delays would end every child before its first save had finished.
    save_s = []
    for _ in range(3):
        t0 = time.perf_counter()
        model.save(tmp_path / "timing.zip")
        save_s.append(time.perf_counter() - t0)
    max_delay = max(0.08, 4 * float(np.median(save_s)))
    delays = np.random.default_rng(0)
    last = -1
    started = time.perf_counter()
    with KillServer(SAVE_LOOP, tmp_path, str(path)) as server:
        setup_s = time.perf_counter() - started
        for cycle in range(2 * N_KILLS):
            if cycle >= N_KILLS and last >= 0:
                break  # the extra cycles only run while no save has completed yet (a very slow machine)
            max_delay *= 1.0 if cycle < N_KILLS else 1.5
            server.run_and_kill(start=cycle * 10**6, delay=float(delays.uniform(0.0, max_delay)))
            kills = cycle + 1
            if not path.exists():
                assert last == -1, f"kill {cycle}: the checkpoint disappeared"
                continue
            loaded = FOMAML.load(path)  # raises on a truncated file
            assert params_equal(loaded.meta_parameters(), reference)
            assert loaded.num_timesteps >= last, f"kill {cycle}: an older checkpoint came back"
            last = loaded.num_timesteps
    total_s = time.perf_counter() - started
    assert last >= 0, "no save completed: raise the delays"
    interrupted = list(tmp_path.glob(".model.*.tmp.zip"))  # a kill mid-save leaves its temporary file
    assert interrupted, "no kill landed during a save: the test did not exercise anything"
    print(f"{kills} kills, {len(interrupted)} mid-save, delays up to {max_delay:.3f} s", end="; ")
    print(f"server start {setup_s:.1f} s, all {total_s:.1f} s")


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "model.zip"
    model = Reptile("MlpPolicy", point_mass(), **small_kwargs())
    model.num_timesteps = 7
    model.save(path)
    before = path.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(th, "save", disk_full)  # fails halfway through the zip (after the data entry)
    model.num_timesteps = 8
    with pytest.raises(OSError, match="No space left"):
        model.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert Reptile.load(path).num_timesteps == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.zip"]  # the temporary file is removed


def test_save_paths_and_file_objects(tmp_path):
    model = Reptile("MlpPolicy", point_mass(), **small_kwargs())
    model.save(tmp_path / "new" / "m")  # as SB3: the folder is created and ".zip" appended
    assert (tmp_path / "new" / "m.zip").is_file() and not (tmp_path / "new" / "m").exists()
    assert type(Reptile.load(tmp_path / "new" / "m")) is Reptile  # and load finds "m.zip" from "m"
    (tmp_path / "folder.zip").mkdir()
    with pytest.raises(IsADirectoryError, match="is a folder"):
        model.save(tmp_path / "folder.zip")
    assert not (tmp_path / "folder.zip_2").exists()  # SB3 would have saved there
    buffer = io.BytesIO()
    model.save(buffer)  # file objects are written as SB3 writes them
    buffer.seek(0)
    assert params_equal(Reptile.load(buffer).meta_parameters(), model.meta_parameters())


def test_load_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"No checkpoint at .*nowhere"):
        MAML.load(tmp_path / "nowhere.zip")
    model = Reptile("MlpPolicy", point_mass(), **small_kwargs())
    with pytest.raises(FileNotFoundError, match="No checkpoint at"):
        model.set_parameters(str(tmp_path / "nowhere.zip"))


def flip_byte_in_entry(raw: bytes, entry: str) -> bytes:
    """``raw`` (a zip archive) with one byte of ``entry``'s stored data changed (its CRC no longer matches)."""
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        info = archive.getinfo(entry)
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
    at = info.header_offset + 30 + name_len + extra_len + info.compress_size // 2
    return raw[:at] + bytes([raw[at] ^ 0xFF]) + raw[at + 1 :]


@pytest.mark.parametrize("algo", [MAML, FOMAML], ids=["maml", "fomaml"])
def test_load_a_truncated_or_corrupt_file(tmp_path, algo):
    model = algo("MlpPolicy", point_mass(), **small_kwargs())
    model.save(tmp_path / "m.zip")
    raw = (tmp_path / "m.zip").read_bytes()
    # cut anywhere: a cut file may end with a whole zip of torch's stored inside the checkpoint (policy.pth)
    cuts = [int(len(raw) * f) for f in (0.3, 0.5, 0.7, 0.9, 0.99)] + [len(raw) - 10, 100]
    broken = {f"truncated to {n}": raw[:n] for n in cuts}
    broken["policy.pth corrupt"] = flip_byte_in_entry(raw, "policy.pth")
    broken["data corrupt"] = flip_byte_in_entry(raw, "data")
    torch_state, np_state = th.get_rng_state(), np.random.get_state()[1].copy()
    for what, content in broken.items():
        (tmp_path / "bad.zip").write_bytes(content)
        with pytest.raises(ValueError, match="truncated or corrupt") as error:
            algo.load(tmp_path / "bad.zip", env=point_mass())
        assert "another library" not in str(error.value), what
        with pytest.raises(ValueError, match="truncated or corrupt"):
            algo.load(io.BytesIO(content))
        with pytest.raises(ValueError, match="truncated or corrupt"):
            model.set_parameters(tmp_path / "bad.zip")
    # refused before anything was applied: not even the global RNGs were reseeded
    assert th.equal(th.get_rng_state(), torch_state) and np.array_equal(np.random.get_state()[1], np_state)


class Unpickling:
    """Records every cloudpickle.loads and torch.load call (SB3's loaders look both up at call time)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.pickles = 0
        self.torch_loads: list[dict] = []
        loads, torch_load = cloudpickle.loads, th.load

        def counting_loads(*args, **kwargs):
            self.pickles += 1
            return loads(*args, **kwargs)

        def recording_torch_load(*args, **kwargs):
            self.torch_loads.append(kwargs)
            return torch_load(*args, **kwargs)

        monkeypatch.setattr(cloudpickle, "loads", counting_loads)
        monkeypatch.setattr(th, "load", recording_torch_load)
        monkeypatch.setattr(th.serialization, "load", recording_torch_load)  # what a pickled tensor calls


def test_another_librarys_checkpoint_is_refused_before_unpickling(tmp_path, monkeypatch):
    PPO("MlpPolicy", "CartPole-v1", n_steps=8, batch_size=8).save(tmp_path / "ppo.zip")
    Reptile("MlpPolicy", point_mass(), **small_kwargs()).save(tmp_path / "reptile.zip")
    calls = Unpickling(monkeypatch)
    with pytest.raises(ValueError, match=r"not a MAML checkpoint.*another library"):
        MAML.load(tmp_path / "ppo.zip", env=point_mass())
    with pytest.raises(ValueError, match=r"not a MAML checkpoint.*saved by Reptile"):
        MAML.load(tmp_path / "reptile.zip", env=point_mass())
    assert calls.pickles == 0 and calls.torch_loads == []


@pytest.mark.parametrize("with_env", [False, True])
def test_load_unpickles_each_entry_once(tmp_path, monkeypatch, with_env):
    model = FOMAML("MlpPolicy", point_mass(), **small_kwargs())
    model.learn(1)
    model.save(tmp_path / "m.zip")
    with zipfile.ZipFile(tmp_path / "m.zip") as archive:
        data = json.loads(archive.read("data"))
        n_pth = sum(name.endswith(".pth") for name in archive.namelist())
    n_pickled = sum(isinstance(v, dict) and ":serialized:" in v for v in data.values())
    calls = Unpickling(monkeypatch)
    loaded = FOMAML.load(tmp_path / "m.zip", env=point_mass() if with_env else None)
    assert calls.pickles == n_pickled
    assert len(calls.torch_loads) == n_pth
    assert all(kwargs.get("weights_only") is True for kwargs in calls.torch_loads)
    assert params_equal(loaded.meta_parameters(), model.meta_parameters())


def test_rng_state_is_stored_as_plain_json(tmp_path):
    model = FOMAML("MlpPolicy", point_mass(), **small_kwargs())
    model.learn(1)
    torch_state = model._torch_stream.state()[0]  # the model's own stream, not torch's global generator
    model.save(tmp_path / "m.zip")
    with zipfile.ZipFile(tmp_path / "m.zip") as archive:
        data = json.loads(archive.read("data"))
    assert data["_checkpoint_class"] == "FOMAML"  # readable without unpickling
    stored = json.dumps(data["_rng_state"])
    assert ":serialized:" not in stored  # no pickle at any depth
    state = rng.rng_state_from_json(data["_rng_state"])
    assert th.equal(state["torch"], torch_state)
    assert state["task_sampler"] == model.task_env.task_rng.bit_generator.state


def test_checkpoints_with_a_pickled_rng_state_still_resume(tmp_path, monkeypatch):
    """Checkpoints of earlier versions hold the live RNG state (pickled): they load and resume bit for bit."""
    straight = Reptile("MlpPolicy", point_mass(), n_inner_steps=1, **small_kwargs(seed=3))
    straight.learn(1)
    monkeypatch.setattr(base_class, "rng_state_to_json", lambda state: state)  # the earlier format
    straight.save(tmp_path / "old.zip")
    monkeypatch.undo()
    with zipfile.ZipFile(tmp_path / "old.zip") as archive:
        assert ":serialized:" in json.loads(archive.read("data"))["_rng_state"]
    straight.learn(1, reset_num_timesteps=False)
    th.manual_seed(12345)  # whatever happened in between: the checkpoint restores every RNG
    resumed = Reptile.load(tmp_path / "old.zip", env=point_mass())
    resumed.learn(1, reset_num_timesteps=False)
    assert params_equal(resumed.meta_parameters(), straight.meta_parameters())


def policy_state(model) -> dict[str, th.Tensor]:
    return {k: v.clone() for k, v in model.policy.state_dict().items()}


def test_set_parameters_is_all_or_nothing(tmp_path):
    model = Reptile("MlpPolicy", point_mass(), **small_kwargs(seed=0))
    other = Reptile("MlpPolicy", point_mass(), **small_kwargs(seed=1))
    before = policy_state(model)
    keys = list(before)

    def bad(change) -> dict:
        params = copy.deepcopy(other.get_parameters())
        change(params["policy"])
        return params

    def wrong_shape(sd):
        sd[keys[-1]] = th.zeros(3, 3)  # the last key: every other tensor fits and would be copied first

    cases = {
        "wrong shape": (bad(wrong_shape), RuntimeError, "shape"),
        "unknown key": (bad(lambda sd: sd.__setitem__("mlp_extractor.typo.weight", th.zeros(1))), RuntimeError, "typo"),
        "not a tensor": (bad(lambda sd: sd.__setitem__(keys[-1], [0.0])), RuntimeError, "expected a tensor"),
        "unknown object": ({**other.get_parameters(), "critic": {}}, ValueError, "invalid object name"),
    }
    for what, (params, error, match) in cases.items():
        with pytest.raises(error, match=match):
            model.set_parameters(params)
        assert params_equal(policy_state(model), before), f"{what}: some tensors were copied"
    with pytest.raises(RuntimeError, match="missing keys"):
        model.set_parameters(bad(lambda sd: sd.pop(keys[0])))
    assert params_equal(policy_state(model), before)
    # a subset with exact_match=False sets exactly that subset
    model.set_parameters(bad(lambda sd: [sd.pop(k) for k in keys[1:]]), exact_match=False)
    after = policy_state(model)
    assert th.equal(after[keys[0]], other.policy.state_dict()[keys[0]])
    assert all(th.equal(after[k], before[k]) for k in keys[1:])
    # and from a checkpoint file
    other.save(tmp_path / "other.zip")
    model.set_parameters(tmp_path / "other.zip")
    assert params_equal(model.meta_parameters(), other.meta_parameters())


def test_set_parameters_refuses_another_architecture_whole(tmp_path):
    wide = Reptile("MlpPolicy", point_mass(), **small_kwargs(policy_kwargs=dict(net_arch=dict(pi=[32], vf=[]))))
    model = Reptile("MlpPolicy", point_mass(), **small_kwargs(policy_kwargs=TINY_POLICY_KWARGS))
    with th.no_grad():
        model.policy.log_std.fill_(0.5)  # log_std has the same shape in both: torch alone would copy it
    before = policy_state(model)
    wide.save(tmp_path / "wide.zip")
    with pytest.raises(RuntimeError, match=r"32") as error:
        model.set_parameters(tmp_path / "wide.zip")
    assert params_equal(policy_state(model), before)
    assert "shape (32, 2) given, (16, 2) expected" in str(error.value)  # every mismatch listed, with both shapes


def _rewrite_checkpoint(source, target, drop=(), data_update=None, replace=None):
    """Copy the checkpoint ``source`` to ``target`` without the entries ``drop``, with ``data`` updated (a key set
    to None is removed) and entries replaced by the bytes in ``replace``."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for name in zin.namelist():
            if name in drop:
                continue
            content = zin.read(name)
            if name == "data" and data_update:
                data = json.loads(content)
                for key, value in data_update.items():
                    data.pop(key) if value is None else data.__setitem__(key, value)
                content = json.dumps(data).encode()
            zout.writestr(name, (replace or {}).get(name, content))


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(drop=("policy.pth",)), "not a complete checkpoint: it lacks policy.pth"),
        (dict(data_update={"meta_batch_size": None}), "not a complete checkpoint: it lacks the saved 'meta_batch_size'"),
        (dict(data_update={"policy_class": None}), "lacks the saved 'policy_class'"),
        (dict(data_update={"fast_batch_size": "two"}), "its saved fast_batch_size is 'two', not an integer >= 1"),
        (dict(replace={"policy.pth": cloudpickle.dumps({"not": "tensors"})}), "not a complete checkpoint: a tensor entry"),
    ],
)
def test_an_incomplete_checkpoint_gets_a_clear_error(tmp_path, change, message):
    """A checkpoint with an entry missing or replaced, or saved data missing, is refused with a ValueError that
    says what it lacks (not a KeyError from deep inside SB3), and nothing is built from it."""
    FOMAML("MlpPolicy", point_mass(), **small_kwargs()).save(tmp_path / "good.zip")
    _rewrite_checkpoint(tmp_path / "good.zip", tmp_path / "bad.zip", **change)
    with pytest.raises(ValueError, match=message):
        FOMAML.load(tmp_path / "bad.zip", env=point_mass())
    FOMAML.load(tmp_path / "good.zip", env=point_mass())  # the intact one loads
