"""The envs/ package: each custom task as its spec defines it, the goal-env contract, and the name resolver."""

import itertools

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.maze import four_room_walls
from envs.point import ROOM_SEGMENTS, wall_distance

CUSTOM = ["ContinuousSeek", "ContinuousSeek:d=20", "DriveSeek", "NoisySeek", "BitFlip", "BitFlip:n=16,start=zeros",
          "Point2D", "Point2DFourRoom", "FourRooms", "FourRooms:goals=full", "EmptyMaze", "FourRoomMaze",
          "Navigation:k=10", "Navigation:k=5,reward=01", "GoalReacher"]


def random_transitions(env, n_steps, seed=0):
    """Step random actions; returns per-step (ag', g, r, terminated, is_success) and episode returns."""
    env.action_space.seed(seed)
    ob, _ = env.reset(seed=seed)
    ag, g, r, term, succ, returns, ret = [], [], [], [], [], [], 0.0
    for _ in range(n_steps):
        g.append(ob["desired_goal"])
        ob, reward, terminated, truncated, info = env.step(env.action_space.sample())
        ag.append(ob["achieved_goal"])
        r.append(reward)
        term.append(terminated)
        succ.append(info["is_success"])
        ret += reward
        if terminated or truncated:
            returns.append(ret)
            ob, ret = env.reset()[0], 0.0
    return np.array(ag), np.array(g), np.array(r), np.array(term), np.array(succ), returns


def average_return(env, policy, episodes, seed=0):
    ob, _ = env.reset(seed=seed)
    total = 0.0
    for _ in range(episodes):
        done = False
        while not done:
            ob, r, terminated, truncated, _ = env.step(policy(ob))
            total += r
            done = terminated or truncated
        ob, _ = env.reset()
    return total / episodes


# -- the goal-env contract, for every custom task ---------------------------------------------------------------

@pytest.mark.parametrize("name", CUSTOM)
def test_passes_gymnasium_env_checker(name):
    check_env(envs.make(name).unwrapped, skip_render_check=True)


@pytest.mark.parametrize("name", CUSTOM)
def test_vectorised_compute_reward_and_terminated_agree_with_step(name):
    env = envs.make(name)
    ag, g, r, term, _, _ = random_transitions(env, 400)
    np.testing.assert_array_equal(env.unwrapped.compute_reward(ag, g, None), r)
    np.testing.assert_array_equal(env.unwrapped.compute_terminated(ag, g, None), term)
    assert env.unwrapped.compute_truncated(ag, g, None).shape == r.shape


@pytest.mark.parametrize("name", CUSTOM)
def test_same_seed_same_episode(name):
    a = random_transitions(envs.make(name), 60, seed=3)
    b = random_transitions(envs.make(name), 60, seed=3)
    for x, y in zip(a[:4], b[:4]):
        np.testing.assert_array_equal(x, y)


def test_seek_success_is_sticky_and_other_tasks_report_the_current_step():
    env = envs.make("ContinuousSeek:d=2")
    ob, _ = env.reset(seed=0)
    for _ in range(10):  # walk onto the goal, then step away from it
        ob, r, *_, info = env.step(np.clip(ob["desired_goal"] - ob["achieved_goal"], -1, 1))
    assert r == 0 and info["is_success"]
    ob, r, *_, info = env.step(np.ones(2, np.float32) * np.sign(-ob["achieved_goal"]))
    assert r == -1 and info["is_success"]  # reached earlier: still a success
    env = envs.make("Point2D")
    ob, _ = env.reset(seed=0)
    info = env.step(np.zeros(2, np.float32))[-1]
    far = np.linalg.norm(ob["achieved_goal"] - ob["desired_goal"]) > 1
    assert info["is_success"] == (not far)


# -- reference checks from the specs ------------------------------------------------------------------------------

def test_driveseek_zero_action_earns_about_9_1():
    """reengage.md §3.2: an untrained policy scores 40 * E[n] / 441 = 9.1."""
    mean = average_return(envs.make("DriveSeek"), lambda ob: np.zeros(1, np.float32), 3000)
    assert abs(mean - 40 * 100.5 / 441) < 0.4, mean


def test_noisyseek_greedy_agent_earns_11_9():
    """reengage.md §3.3: head for the nearest active goal with a step of length <= 1: 11.9 +- 0.3."""
    def greedy(ob):
        G = ob["desired_goal"].reshape(200, 3)
        goals = G[G[:, 0] == 1, 1:]
        diff = goals - ob["observation"]
        d = diff[np.argmin(np.linalg.norm(diff, axis=1))]
        return d / max(1.0, np.linalg.norm(d))
    mean = average_return(envs.make("NoisySeek"), greedy, 2000)
    assert abs(mean - 11.9) < 0.3, mean


@pytest.mark.parametrize("d", [5, 10, 20])
def test_continuousseek_straight_line_always_succeeds_and_random_never(d):
    env = envs.make(f"ContinuousSeek:d={d}")
    successes = []
    straight = lambda ob: np.clip(ob["desired_goal"] - ob["achieved_goal"], -1, 1)  # noqa: E731
    for policy in (straight, lambda ob: env.action_space.sample()):
        ob, _ = env.reset(seed=1)
        wins = 0
        for _ in range(200):
            done = False
            while not done:
                ob, _, terminated, truncated, info = env.step(policy(ob))
                done = terminated or truncated
            wins += info["is_success"]
            ob, _ = env.reset()
        successes.append(wins / 200)
    assert successes[0] == 1.0
    assert successes[1] < 0.01


@pytest.mark.parametrize("spec", ["BitFlip:n=16", "BitFlip:n=8,start=zeros"])
def test_bitflip_flipping_the_differing_bits_succeeds_within_n_steps(spec):
    env = envs.make(spec)
    n = env.unwrapped.n
    for seed in range(20):
        ob, _ = env.reset(seed=seed)
        differing = np.flatnonzero(ob["achieved_goal"] != ob["desired_goal"])
        for step, bit in enumerate(differing):
            ob, r, terminated, truncated, info = env.step(bit)
            assert terminated == (step == len(differing) - 1)
        assert info["is_success"] and r == 0 and len(differing) <= n


def test_fourrooms_geometry_matches_gcsl():
    """hdm.md §6.1: 1777 of the 2500 grid cells are collision-free; the ball never overlaps a wall."""
    env = envs.make("FourRooms")
    assert len(env.unwrapped.goal_cells) == 1777
    ag, *_ = random_transitions(env, 3000)
    assert wall_distance(ag.astype(np.float64)).min() > 0.08 - 1e-4
    assert np.abs(ag).max() <= 0.55 + 1e-6
    assert len(ROOM_SEGMENTS) == 6


def test_fourrooms_full_goal_set_is_gcsls_whole_grid_walls_included():
    """goals=full samples all 2500 cells, as GCSL does; the default keeps the 1777 collision-free ones."""
    free, full = envs.make("FourRooms").unwrapped, envs.make("FourRooms:goals=full").unwrapped
    assert len(full.goal_cells) == 2500 and len(free.goal_cells) == 1777
    goals = np.array([full.reset(seed=s)[0]["desired_goal"] for s in range(200)], np.float64)
    blocked = (wall_distance(goals) < 0.08) | (np.abs(goals).max(1) > 0.55)
    assert 0.15 < blocked.mean() < 0.45  # 723 of 2500 cells (29 %) cannot hold the ball's centre
    free_goals = np.array([free.reset(seed=s)[0]["desired_goal"] for s in range(200)], np.float64)
    assert wall_distance(free_goals).min() >= 0.08 - 1e-6


def test_navigation_zero_one_reward_is_the_indicator_of_success():
    """reward=01 (the hEM paper's r = 1[success]): 1 on the step that reaches the goal, 0 before; -10 is r - 1."""
    rows = {}
    for spec in ("Navigation:k=2,reward=01", "Navigation:k=2"):
        env = envs.make(spec)
        env.action_space.seed(0)
        ob, _ = env.reset(seed=0)
        ag, g, r, term, succ = [], [], [], [], []
        for t in range(300):  # random steps, then straight to the goal, so both rewards occur
            a = env.action_space.sample() if t % 10 < 5 else (ob["desired_goal"] - ob["achieved_goal"]) / 0.2
            g.append(ob["desired_goal"])
            ob, reward, terminated, truncated, info = env.step(np.clip(a, -1, 1))
            ag.append(ob["achieved_goal"]), r.append(reward), term.append(terminated), succ.append(info["is_success"])
            if terminated or truncated:
                ob, _ = env.reset()
        ag, g, r = np.array(ag), np.array(g), np.array(r)
        np.testing.assert_array_equal(env.unwrapped.compute_reward(ag, g, None), r)
        np.testing.assert_array_equal(env.unwrapped.compute_terminated(ag, g, None), term)
        rows[spec] = r, np.array(succ)
    r01, succ = rows["Navigation:k=2,reward=01"]
    assert envs.sparse_rewards(envs.make("Navigation:k=2,reward=01")) == (0.0, 1.0)
    assert succ.any() and not succ.all()
    np.testing.assert_array_equal(r01, succ.astype(float))
    np.testing.assert_array_equal(rows["Navigation:k=2"][0], r01 - 1)


def test_fourrooms_random_policy_mostly_stays_in_the_start_room():
    """hdm.md §6.1: a uniform-random policy ends the episode in the start room 88% of the time."""
    env = envs.make("FourRooms", discrete=3)
    env.action_space.seed(0)
    ob, _ = env.reset(seed=0)
    in_start_room = []
    for _ in range(300):
        done = False
        while not done:
            ob, _, terminated, truncated, _ = env.step(env.action_space.sample())
            done = terminated or truncated
        in_start_room.append((ob["achieved_goal"] < 0).all())
        ob, _ = env.reset()
    assert 0.8 < np.mean(in_start_room) < 0.95


def test_point2d_four_room_walls_block_and_doors_pass():
    env = envs.make("Point2DFourRoom").unwrapped
    env.reset(seed=0)
    env.p = np.array([-0.5, -1.5])  # below the central cross, moving up into it
    for _ in range(3):
        env.step(np.array([0.0, 1.0], np.float32))
    assert env.p[1] < -0.8
    env.p = np.array([3.0, -1.5])  # below a doorway (|x| in [1.65, 4.45] for B = 5)
    for _ in range(3):
        env.step(np.array([0.0, 1.0], np.float32))
    assert env.p[1] > 1.0


def test_four_room_maze_layout_and_moves():
    walls = four_room_walls()
    assert walls.sum() == 11 + 5 + 5 - 4  # column 5, half rows 5 and 6, minus four doors
    env = envs.make("FourRoomMaze:slip=0.0").unwrapped
    env.reset(seed=0)
    env.pos = np.array([0, 4])
    env.step(3)  # right, into the wall column: ignored
    assert tuple(env.pos) == (0, 4)
    env.pos = np.array([2, 4])
    env.step(3)  # right, through the door at (2, 5)
    assert tuple(env.pos) == (2, 5)


def test_goal_reacher_achieved_goal_is_the_fingertip():
    env = envs.make("GoalReacher")
    ob, _ = env.reset(seed=0)
    for _ in range(5):
        ob, *_ = env.step(env.action_space.sample())
    inner = env.unwrapped.inner
    np.testing.assert_allclose(ob["achieved_goal"], inner.get_body_com("fingertip")[:2], atol=1e-6)
    np.testing.assert_allclose(ob["desired_goal"], inner.goal, atol=1e-6)


def test_fetch_reach_compute_reward_agrees_with_step():
    env = envs.make("FetchReach")
    ag, g, r, _, succ, _ = random_transitions(env, 100)
    np.testing.assert_array_equal(env.unwrapped.compute_reward(ag, g, None), r)
    assert envs.horizon(env) == 50


@pytest.mark.parametrize("name", ["FetchReach", "FetchPush", "FetchPickAndPlace", "FetchSlide"])
def test_fetch_observations_are_bit_for_bit_gymnasium_robotics(name):
    """envs.make builds Fetch tasks with cached MuJoCo addresses (envs/fetch.py); every array must be the stock one."""
    fast, stock = envs.make(name), gym.make(envs.ROBOTICS[name])
    assert type(fast.unwrapped).__name__ == name and type(stock.unwrapped).__module__.startswith("gymnasium_robotics")
    rng = np.random.default_rng(0)
    for seed in range(2):
        a, b = fast.reset(seed=seed)[0], stock.reset(seed=seed)[0]
        for t in range(51):
            for key in ("observation", "achieved_goal", "desired_goal"):
                assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), (seed, t, key)
            if t == 50:
                break
            action = rng.uniform(-1, 1, 4).astype(np.float32)
            a, r_a, term_a, trunc_a, info_a = fast.step(action)
            b, r_b, term_b, trunc_b, info_b = stock.step(action)
            assert (r_a, term_a, trunc_a, info_a["is_success"]) == (r_b, term_b, trunc_b, info_b["is_success"])
        assert trunc_a  # a whole 50-step episode was compared


@pytest.mark.parametrize("name,steps", [("FetchPush", 55), ("BitFlip:n=4", 30)])
def test_threaded_vector_env_steps_exactly_as_sync_vector_env(name, steps):
    """Same observations, rewards, ends and infos in the same order, through truncations (FetchPush at 50 steps) and
    terminations with next-step autoresets (BitFlip); only the physics runs on threads."""
    fns = [lambda: envs.make(name) for _ in range(3)]
    threaded, sync = envs.ThreadedVectorEnv(fns, threads=2), gym.vector.SyncVectorEnv(fns)
    a, b = threaded.reset(seed=5)[0], sync.reset(seed=5)[0]
    threaded.action_space.seed(0)
    ended = 0
    for t in range(steps):
        action = threaded.action_space.sample()
        (a, *rest_a, info_a), (b, *rest_b, info_b) = threaded.step(action), sync.step(action)
        for key in a:
            assert np.array_equal(a[key], b[key]), (t, key)
        for x, y in zip(rest_a, rest_b):  # reward, terminated, truncated
            assert np.array_equal(x, y), t
        assert info_a.keys() == info_b.keys() and all(np.array_equal(info_a[k], info_b[k]) for k in info_a)
        ended += int(np.sum(rest_a[1] | rest_a[2]))
    assert ended >= 3  # every env ended at least once, so the autoreset path ran
    threaded.close()


# -- the resolver --------------------------------------------------------------------------------------------------

def test_short_names_map_to_current_robotics_versions():
    assert envs.make("FetchPush").spec.id == "FetchPush-v4"
    assert envs.make("HandReach").spec.id == "HandReach-v3"
    assert envs.make("FetchSlide-v4").spec.id == "FetchSlide-v4"  # a full id passes through


def test_parameterised_variants_from_a_string():
    assert envs.make("ContinuousSeek:d=10").observation_space["desired_goal"].shape == (10,)
    env = envs.make("BitFlip:n=16")
    assert env.action_space.n == 16 and envs.horizon(env) == 16
    assert envs.make("BitFlip", n=7).action_space.n == 7


@pytest.mark.parametrize("spec,message", [("FetchReech", "did you mean FetchReach"),
                                          ("Pendulum-v1", "not goal-conditioned"),
                                          ("ContinuousSeek:d=0", "d >= 1"),
                                          ("BitFlip:bits=3", "unexpected keyword"),
                                          ("Point2D:walls", "key=value"),
                                          ("FourRooms:goals=all", "'free' or 'full'"),
                                          ("Navigation:reward=1/0", "'-10' or '01'")])
def test_user_mistakes_raise_one_line_env_errors(spec, message):
    with pytest.raises(envs.EnvError) as err:
        envs.make(spec)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_every_env_reports_is_success():
    for name in ["FetchReach", "PointMaze_UMaze-v3", "BitFlip"]:
        env = envs.make(name)
        env.reset(seed=0)
        info = env.step(env.action_space.sample())[-1]
        assert "is_success" in info


def test_discrete_adapter_joint_and_factorised():
    env = envs.make("FetchReach", discrete=3)
    assert env.action_space == gym.spaces.Discrete(27)
    table = env.table
    assert table.shape == (27, 4) and (table[:, 3] == 0).all()  # the blocked gripper is left out
    assert {tuple(row) for row in table[:, :3]} == set(itertools.product((-1, 0, 1), repeat=3))
    env = envs.make("ContinuousSeek:d=4", discrete=5, factorised=True)
    assert env.action_space == gym.spaces.MultiDiscrete([5] * 4)
    np.testing.assert_allclose(env.action(np.array([0, 1, 2, 4])), [-1, -0.5, 0, 1])
    env = envs.make("Point2D", discrete=3)
    np.testing.assert_allclose(env.action(env.action_space.n - 1), [1, 1])


def test_record_gif_saves_one_episode_and_an_env_that_cannot_render_says_why(tmp_path, capsys):
    import imageio

    steps = []
    assert not envs.record_gif("BitFlip:n=4", steps.append, str(tmp_path / "bits.gif"))  # no rgb_array rendering
    assert "no video: BitFlip:n=4 cannot render here" in capsys.readouterr().out and not steps
    assert not (tmp_path / "bits.gif").exists()
    path = tmp_path / "reach.gif"
    if not envs.record_gif("FetchReach", lambda ob: steps.append(ob) or np.zeros(4, np.float32), str(path), seed=3):
        pytest.skip(f"MuJoCo cannot render on this machine: {capsys.readouterr().out.strip()}")
    assert len(steps) == 50 and len(imageio.mimread(path)) == 51  # the reset frame and one per step
    first = envs.make("FetchReach").reset(seed=3)[0]
    np.testing.assert_array_equal(steps[0]["desired_goal"], first["desired_goal"])  # the episode of that seed
