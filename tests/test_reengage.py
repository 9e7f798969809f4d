"""reengage.py: the goal-gradient term (finite differences, the target-actor path, the sparse mask under both reward
conventions, alpha = 0), the update order, the per-env defaults, then the script as a user runs it. reengage_seek.py
(the same term on the paper's ContinuousSeek recipe): the SB3 sampler, its defaults, learning. The script-level
tests shared with reengage_sac.py and reengage_seek.py run on all three files here."""

import copy
import glob
import os
import re

import numpy as np
import pytest
import torch

import envs
import her_ddpg
import reengage
import reengage_sac
import reengage_seek
from conftest import (IndexGoalEnv, assert_one_line_error, eval_lines, final_success, indexed_episodes,
                      run_in_one_process, train_save_and_reload)
from reengage import Actor, Args, Critic, Normalizer, fill_defaults, reengage_critic_loss

OBS, GOAL, ACT, B, GAMMA = 4, 3, 2, 16, 0.95
FAIL_SUCCESS = (-1.0, 0.0)  # Fetch, Hand, ContinuousSeek
ZERO_ONE = (0.0, 1.0)  # PointMaze, AntMaze


@pytest.fixture
def nets():
    torch.manual_seed(0)
    actor, critic = Actor(OBS, GOAL, ACT, [32, 32], 1.0).double(), Critic(OBS, GOAL, ACT, [32, 32], 1.0).double()
    g_norm = Normalizer(GOAL)
    g_norm.update(np.random.default_rng(0).normal(0.5, 2.0, (100, GOAL)))
    return actor, critic, copy.deepcopy(actor), copy.deepcopy(critic), g_norm


def batch(seed=0, rewards=FAIL_SUCCESS):
    rng = np.random.default_rng(seed)
    o, o2 = torch.tensor(rng.normal(size=(B, OBS))), torch.tensor(rng.normal(size=(B, OBS)))
    a, g = torch.tensor(rng.uniform(-1, 1, (B, ACT))), torch.tensor(rng.normal(size=(B, GOAL)))
    r = torch.tensor(np.where(rng.random(B) < 0.6, *rewards))
    return o, a, r, o2, g, torch.zeros(B, dtype=torch.float64)


def loss(o, a, r, o2, g, d, nets, alpha=0.2, rewards=FAIL_SUCCESS):
    actor, critic, actor_t, critic_t, g_norm = nets
    return reengage_critic_loss(o, a, r, o2, g, d, critic, actor_t, critic_t, g_norm, GAMMA, alpha, rewards)


def grad_match_by_hand(o, a, r, o2, g, d, nets, block_actor=False, rewards=FAIL_SUCCESS):
    """The gradient term from finite differences of Q and y in each goal coordinate (float64, central, h = 1e-6)."""
    _, critic, actor_t, critic_t, g_norm = nets
    x = lambda obs, gg: torch.cat([obs, g_norm.torch(gg)], -1)  # noqa: E731
    q_at = lambda gg: critic(x(o, gg), a)  # noqa: E731
    if block_actor:  # the target actor sees the fixed goal; only Q''s goal input moves
        y_at = lambda gg: her_ddpg.td_target(r, d, critic_t(x(o2, gg), actor_t(x(o2, g))), GAMMA, rewards)  # noqa
    else:
        y_at = lambda gg: her_ddpg.td_target(r, d, critic_t(x(o2, gg), actor_t(x(o2, gg))), GAMMA, rewards)  # noqa
    h, steps = 1e-6, 1e-6 * torch.eye(GOAL, dtype=torch.float64)
    grad_q = torch.stack([(q_at(g + e) - q_at(g - e)) / (2 * h) for e in steps], -1)
    grad_y = torch.stack([(y_at(g + e) - y_at(g - e)) / (2 * h) for e in steps], -1)
    mask = (r == rewards[0]).double().unsqueeze(-1)
    return (mask * (grad_q - grad_y) ** 2).mean()


def test_grad_term_matches_finite_differences(nets):
    o, a, r, o2, g, d = batch()
    with torch.no_grad():
        expected = grad_match_by_hand(o, a, r, o2, g, d, nets)
    _, grad_match, _ = loss(o, a, r, o2, g, d, nets)
    assert expected > 0
    torch.testing.assert_close(grad_match, expected, rtol=1e-5, atol=1e-9)


def test_target_gradient_includes_the_path_through_the_target_actor(nets):
    o, a, r, o2, g, d = batch(1)
    with torch.no_grad():
        full = grad_match_by_hand(o, a, r, o2, g, d, nets)
        blocked = grad_match_by_hand(o, a, r, o2, g, d, nets, block_actor=True)
    _, grad_match, _ = loss(o, a, r, o2, g, d, nets)
    assert abs(full - blocked) > 1e-3 * full  # the actor path matters here ...
    torch.testing.assert_close(grad_match, full, rtol=1e-5, atol=1e-9)  # ... and the code follows it


def test_rows_with_reward_zero_contribute_nothing(nets):
    o, a, r, o2, g, d = batch(2)
    _, base, _ = loss(o, a, r, o2, g, d, nets)
    success = r == 0
    assert success.any() and (~success).any()
    o_moved = o.clone()
    o_moved[success] += 3.0  # change every r = 0 row's state: their gradients change, the term must not
    _, moved, _ = loss(o_moved, a, r, o2, g, d, nets)
    torch.testing.assert_close(moved, base)
    _, none, _ = loss(o, a, torch.zeros_like(r), o2, g, d, nets)
    assert none.item() == 0.0


def test_with_zero_one_rewards_the_term_applies_where_r_is_zero_and_the_clip_follows(nets):
    """PointMaze's (0, 1): r_fail = 0, so the term masks on r = 0 and the target lies in [0, 1/(1 - gamma)]."""
    o, a, r, o2, g, d = batch(3, rewards=ZERO_ONE)
    with torch.no_grad():
        expected = grad_match_by_hand(o, a, r, o2, g, d, nets, rewards=ZERO_ONE)
    _, grad_match, _ = loss(o, a, r, o2, g, d, nets, rewards=ZERO_ONE)
    assert expected > 0
    torch.testing.assert_close(grad_match, expected, rtol=1e-5, atol=1e-9)
    _, none, _ = loss(o, a, torch.ones_like(r), o2, g, d, nets, rewards=ZERO_ONE)  # every row a success
    assert none.item() == 0.0
    assert envs.sparse_rewards(envs.make("PointMaze_UMaze-v3")) == ZERO_ONE


def test_alpha_zero_is_her_ddpg_critic_loss(nets):
    actor, critic, actor_t, critic_t, g_norm = nets
    o, a, r, o2, g, d = batch(4)
    value, grad_match, q = loss(o, a, r, o2, g, d, nets, alpha=0.0)
    x = torch.cat([o, torch.as_tensor(g_norm(g.numpy()), dtype=torch.float64)], -1)  # her_ddpg's numpy path
    x2 = torch.cat([o2, x[:, OBS:]], -1)
    with torch.no_grad():
        y = her_ddpg.td_target(r, d, critic_t(x2, actor_t(x2)), GAMMA)
    torch.testing.assert_close(value, (critic(x, a) - y).pow(2).mean())
    assert grad_match.item() == 0.0


def test_grad_term_trains_the_critic(nets):
    """The term reaches the critic's weights through the double backward (create_graph)."""
    o, a, r, o2, g, d = batch(5)
    _, grad_match, _ = loss(o, a, r, o2, g, d, nets)
    grads = torch.autograd.grad(grad_match, list(nets[1].parameters()), allow_unused=True)
    assert any(gr is not None and gr.abs().sum() > 0 for gr in grads)


def test_the_actor_steps_on_the_critic_as_it_was_before_the_critic_step(nets):
    """As baselines: both gradients first, then both steps, so the actor's gradient is taken at the old critic."""
    actor, critic, actor_t, critic_t, g_norm = nets
    o, a, r, o2, g, d = batch(6)
    old_actor, old_critic = copy.deepcopy(actor), copy.deepcopy(critic)
    pi = old_actor(torch.cat([o, g_norm.torch(g)], -1))
    old_loss = -old_critic(torch.cat([o, g_norm.torch(g)], -1), pi).mean()
    grads = torch.autograd.grad(old_loss, list(old_actor.parameters()))
    expected = [p - 0.5 * gr for p, gr in zip(old_actor.parameters(), grads)]
    opts = [torch.optim.SGD(net.parameters(), lr=0.5) for net in (actor, critic)]
    args = Args(alpha=0.2, action_l2=0.0)
    reengage.update((o, a, r, o2, g, d), actor, critic, actor_t, critic_t, *opts, args, GAMMA, FAIL_SUCCESS, g_norm)
    assert any(not torch.equal(p, q) for p, q in zip(critic.parameters(), old_critic.parameters()))  # it stepped
    for p, p_expected in zip(actor.parameters(), expected):
        torch.testing.assert_close(p, p_expected)


@pytest.mark.parametrize("module", [reengage_seek, reengage_sac])
def test_sb3_sampler_relabels_exactly_the_first_80_percent_at_t_up_to_T_minus_2_never_with_the_final_state(module):
    """SB3 1.x's HerReplayBuffer, as in the paper's runs: int(0.8 B) rows, t in 0 .. T-2, t' in t+1 .. T-1."""
    T, lengths = 10, np.r_[np.full(30, 10), np.random.default_rng(1).integers(1, 11, 20)]  # some episodes ended early
    buf = module.EpisodeBuffer(50 * T, T, 2, 2, 1, IndexGoalEnv(), "future_sb3", 4, np.random.default_rng(0))
    buf.store(*indexed_episodes(50, T, lengths))
    for size in (37, 20_000):
        o, _, r, _, g, _ = buf.sample(size)
        e, t, relabelled = o[:, 0].astype(int), o[:, 1].astype(int), g[:, 0] >= 0
        her = np.arange(size) < int(0.8 * size)
        assert (relabelled == (her & (lengths[e] > 1))).all()  # exactly the first int(0.8 B) rows, not a coin
        assert (t < lengths[e]).all() and (t[relabelled] <= lengths[e[relabelled]] - 2).all()
        assert (g[relabelled, 0] == e[relabelled]).all() and (g[relabelled, 1] > t[relabelled]).all()
        assert (g[relabelled, 1] <= lengths[e[relabelled]] - 1).all()  # the final state s_T is never a goal
    full = relabelled & (lengths[e] == T)  # every index is reached: t in 0 .. T-2, t' in t+1 .. T-1, r recomputed
    assert set(t[full]) == set(range(T - 1)) and set(g[full, 1]) == set(range(1, T))
    assert ((r == 0) == ((g[:, 1] == t + 1) & relabelled)).all()
    base = module.EpisodeBuffer(50 * T, T, 2, 2, 1, IndexGoalEnv(), "future", 4, np.random.default_rng(0))
    base.store(*indexed_episodes(50, T))
    o, _, _, _, g, _ = base.sample(20_000)
    assert (g[:, 1] == T).any() and (g[:, 0] >= 0)[: 16_000].mean() < 0.9  # baselines': a coin, s_T included


def test_per_env_defaults_fill_only_the_unset_flags():
    assert fill_defaults(Args(env="FetchReach")).total_timesteps == 6_000  # its own demo budget
    hand = fill_defaults(Args(env="HandReach"))
    assert (hand.alpha, hand.total_timesteps, hand.num_envs, hand.batch_size, hand.gamma) == (2e-5, 5_000, 2, 256, None)
    push = fill_defaults(Args(env="FetchPush", batch_size=64))
    assert (push.total_timesteps, push.num_envs, push.batch_size) == (1_000_000, 16, 64)  # a flag you set wins


def test_reengage_seek_defaults_are_the_papers_seek_recipe():
    """Table 1 and SB3 1.x's DDPG: alpha 0.2, gamma 0.95, 2 x 256, noise 0.03, 1000 random steps, Polyak 0.995."""
    a = reengage_seek.Args()
    assert (a.env, a.alpha, a.gamma, a.hidden_dims, a.noise_eps, a.random_eps) == ("ContinuousSeek:d=10", 0.2, 0.95,
                                                                                 [256, 256], 0.03, 0.0)
    assert (a.random_episodes, a.n_batches, a.batch_size, a.polyak, a.replay_strategy) == (100, 10, 512, 0.995,
                                                                                          "future_sb3")


# -- the script ----------------------------------------------------------------------------------------------------

SEEK_TINY = ["--env", "ContinuousSeek:d=3", "--total-timesteps", "300", "--eval-interval", "100", "--random-episodes",
             "10", "--batch-size", "32", "--hidden-dims", "32", "--n-test-rollouts", "5"]


REACH_TINY = ["--total-timesteps", "200", "--eval-interval", "100", "--n-batches", "5", "--batch-size", "32",
              "--hidden-dims", "32", "--n-test-rollouts", "2"]


@pytest.mark.parametrize("script, env, args, grad_steps", [("reengage", "FetchReach", REACH_TINY, 10),
                                                           ("reengage_seek", "ContinuousSeek:d=3", SEEK_TINY[2:], 210),
                                                           ("reengage_sac", "ContinuousSeek:d=3", SEEK_TINY[2:], 210)])
def test_a_tiny_run_prints_header_evaluations_and_summary_and_its_checkpoint_reloads(run, tmp_path, script, env, args,
                                                                                    grad_steps):
    stdout, _ = train_save_and_reload(run, tmp_path, [f"{script}.py"], env, *args, n_test=4)
    lines = stdout.splitlines()
    steps = int(args[args.index("--total-timesteps") + 1])
    env_id = "FetchReach-v4" if env == "FetchReach" else "ContinuousSeek-v0"
    assert re.match(rf"{script} \| {env_id} \| {steps} env steps \| seed 1 \| run runs/\S+ \| tensorboard", lines[0])
    assert len(eval_lines(stdout)) == steps // int(args[args.index("--eval-interval") + 1])
    summary = rf"{script} done \| success \d\.\d\d \| {steps} env steps \| {grad_steps} gradient steps \| \d+ s \| "
    assert re.match(summary + "checkpoint runs/", lines[-1])


def test_alpha_zero_trains_exactly_her_ddpg(run, tmp_path):
    """Same seed, same recipe: the alpha = 0 arm reproduces her_ddpg.py evaluation for evaluation, weight for weight."""
    args = ["--env", "FetchReach", "--total-timesteps", "200", "--eval-interval", "100", "--n-batches", "5",
            "--hidden-dims", "32", "--batch-size", "32", "--n-test-rollouts", "2", "--save-model"]
    her, ours = run("her_ddpg.py", *args), run("reengage.py", *args, "--alpha", "0")
    assert eval_lines(her.stdout) == eval_lines(ours.stdout) and len(eval_lines(ours.stdout)) == 2, ours.stderr
    [a], [b] = (glob.glob(str(tmp_path / "runs" / f"*{s}*" / f"{s}.pt")) for s in ("her_ddpg", "reengage"))
    a, b = torch.load(a, weights_only=True)["actor"], torch.load(b, weights_only=True)["actor"]
    assert all(torch.equal(a[k], b[k]) for k in a)


BAD_INPUT = [("reengage", ["--env", "BitFlip"], "DDPG needs a continuous Box action space"),
             ("reengage_seek", ["--env", "BitFlip"], "DDPG needs a continuous Box action space"),
             ("reengage_seek", ["--random-episodes", "-1"], "--random-episodes must be positive"),
             ("reengage_sac", ["--env", "BitFlip"], "SAC needs a continuous Box action space"),
             ("reengage", ["--env", "FetchReachDense-v4"], "dense or unknown reward"),
             ("reengage_sac", ["--random-eps", "2"], "[0, 1]"),
             ("reengage_sac", ["--ent-coef-init", "0"], "--ent-coef-init > 0"),
             ("reengage", ["--eval-checkpoint", "missing.pt"], "no checkpoint")]


class WritesAMarker:
    """Unpickled by plain pickle, this opens (creates) the marker file: code a checkpoint must never run."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def test_help_bad_input_and_foreign_checkpoints_in_one_process(tmp_path):
    """--help says which values run; each user mistake ends in one line; a checkpoint that would run code, a text file
    and the other variant's checkpoint are refused in one line, and nothing runs. One Python process for all."""
    marker = str(tmp_path / "pwned")
    evil, garbage = tmp_path / "evil.pt", tmp_path / "garbage.pt"
    torch.save({"algo": "reengage", "actor": WritesAMarker(marker)}, evil)
    torch.load(evil, weights_only=False)  # the file is armed: a plain load runs the code
    assert os.path.exists(marker)
    os.remove(marker)
    garbage.write_text("not a checkpoint\n")
    variants = ("reengage", "reengage_sac", "reengage_seek")
    for other in variants:  # each variant's file, refused by the other variants
        torch.save({"algo": other, "actor": {}}, tmp_path / f"{other}.pt")
    files = [(script, path) for i, script in enumerate(variants)
             for path in (evil, garbage, tmp_path / f"{variants[i - 1]}.pt")]
    runs = [(tmp_path, ["reengage.py", "--help"])]
    runs += [(tmp_path, [f"{script}.py", *args]) for script, args, _ in BAD_INPUT]
    runs += [(tmp_path, [f"{script}.py", "--eval-checkpoint", str(path)]) for script, path in files]
    outs = run_in_one_process(runs)
    text = " ".join(outs[0].stdout.split()).replace("│ ", "")
    assert outs[0].returncode == 0
    assert "the paper's best on HandReach" in text and "unset: 5k; FetchReach 6k; 1M on blocks" in text
    for (_, _, message), out in zip(BAD_INPUT, outs[1:]):
        assert_one_line_error(out, message)
    for (script, path), out in zip(files, outs[1 + len(BAD_INPUT):]):
        assert_one_line_error(out, f"{path} is not a {script}.py checkpoint")
    assert not os.path.exists(marker)


def test_learns_continuous_seek(run):
    """d = 3, 4000 env steps (3500 updates at batch 128), reengage_seek.py: ReenGAGE reached 0.90 success here with
    seed 1; an untrained or broken agent stays near 0 (random actions succeed on < 1% of goals)."""
    out = run("reengage_seek.py", "--env", "ContinuousSeek:d=3", "--total-timesteps", "4000", "--eval-interval", "1000",
              "--batch-size", "128", "--hidden-dims", "64", "64", "--random-episodes", "50", timeout=900)
    assert out.returncode == 0, out.stderr
    assert final_success(out.stdout) >= 0.6, out.stdout


@pytest.mark.slow
def test_default_fetch_reach_demo_is_solved(run):
    out = run("reengage.py", timeout=900)  # FetchReach
    assert out.returncode == 0, out.stderr
    assert "step     6000" in out.stdout and final_success(out.stdout) >= 0.9, out.stdout
