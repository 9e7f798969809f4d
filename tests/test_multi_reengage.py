"""multi_reengage.py: the DeepSets critic (padding, order), the gate-gradient loss against a dense reading of the
paper's equations, alpha = 0, the encoder trained by the critic only, the unclipped count reward, then the script as a
user runs it (console lines, warm-up, refusals, checkpoints)."""

import copy
import pickle
import re

import numpy as np
import pytest
import torch

import envs
import multi_reengage
from conftest import assert_one_line_error, train_save_and_reload
from multi_reengage import (Actor, Args, Batch, Critic, EpisodeBuffer, critic_loss_fn, fill_defaults, pack,
                            soft_update, td_target, update)

N_MAX, Z, ACT, B, GAMMA = 200, 6, 1, 8, 0.95


def goal_sets(rng, batch=B, n_max=N_MAX):
    """Flat [batch, n_max * 3] goal tensors as the envs give them: n active distinct cells first, padding (0, 0, 0)."""
    goals = np.zeros((batch, n_max, 3))
    for row in goals:
        n = rng.integers(1, 30)
        cells = rng.choice(441, n, replace=False)
        row[:n, 0], row[:n, 1], row[:n, 2] = 1, cells % 21 - 10, cells // 21 - 10
    return torch.tensor(goals.reshape(batch, -1))


@pytest.fixture
def nets():
    torch.manual_seed(0)
    critic = Critic(Z, ACT, [32, 32], 8, [32], N_MAX, 1.0).double()
    actor = Actor(Z, ACT, 8, [32], 1.0).double()
    return actor, critic, copy.deepcopy(actor), copy.deepcopy(critic)


def batch(seed=0):
    rng = np.random.default_rng(seed)
    goals = goal_sets(rng)
    z, z2 = torch.tensor(rng.normal(size=(B, Z))), torch.tensor(rng.normal(size=(B, Z)))
    a = torch.tensor(rng.uniform(-1, 1, (B, ACT)))
    G = goals.view(B, N_MAX, 3)
    r_item = torch.zeros(B, N_MAX, dtype=torch.float64)
    for i in range(B):  # s' stands on the first active goal in half the rows
        if i % 2 == 0:
            r_item[i, 0] = 1.0
    dones = torch.zeros(B, dtype=torch.float64)
    return Batch(z, a, r_item.sum(-1), z2, goals, dones, r_item), G


def test_pooling_ignores_padding_and_the_order_of_active_goals(nets):
    _, critic, _, _ = nets
    (z, a, _, _, goals, _, _), G = batch()
    q = critic(*pack(goals, N_MAX)[:3], z, a)
    # padding rows with garbage positions but gate 0 change nothing
    G_pad = G.clone()
    G_pad[:, 100:, 1:] = torch.randn(B, 100, 2, dtype=torch.float64) * 5
    assert torch.equal(q, critic(*pack(G_pad.view(B, -1), N_MAX)[:3], z, a))
    # permuting the slots (active ones among padding, in any order) changes Q only by rounding
    perm = torch.randperm(N_MAX)
    q_perm = critic(*pack(G[:, perm].reshape(B, -1), N_MAX)[:3], z, a)
    torch.testing.assert_close(q, q_perm, rtol=1e-12, atol=1e-12)
    # and the pooled embedding is the dense (1/n_max) sum_i b_i^2 E over all n_max slots
    dense = (G[..., :1] ** 2 * critic.encoder(torch.cat([G[..., 1:], z[:, None].expand(B, N_MAX, Z)], -1))).sum(1)
    torch.testing.assert_close(critic.embed(*pack(goals, N_MAX)[:3], z), dense / N_MAX)


def dense_loss(z, a, r, r_item, z2, G, critic, actor_t, critic_t, alpha):
    """The paper's loss (Eq. 36-40, the authors' multi_reengage_ddpg.py) written over all n_max slots, padding
    included."""
    def q_of(net, b, zz, aa):
        e = net.encoder(torch.cat([G[..., 1:], zz[:, None].expand(B, N_MAX, Z)], -1))
        h = (b ** 2 * e).sum(1) / N_MAX
        return net.q(h, zz, aa), h

    bn = G[..., :1].clone().requires_grad_(True)
    h_pi = (G[..., :1] * critic_t.encoder(torch.cat([G[..., 1:], z2[:, None].expand(B, N_MAX, Z)], -1))).sum(1)
    a2 = actor_t(h_pi.detach() / N_MAX, z2)  # pi' pools with b and sees no gradient
    y = r + GAMMA * q_of(critic_t, bn, z2, a2)[0]
    bn_grad = torch.autograd.grad(y.sum(), bn)[0].squeeze(-1)
    R = (bn.squeeze(-1) ** 2 * r_item).sum(-1)  # R = sum_i b_i^2 R_item: its gate gradient is 2 b R_item
    G_tgt = bn_grad + torch.autograd.grad(R.sum(), bn)[0].squeeze(-1)
    bc = G[..., :1].clone().requires_grad_(True)
    q = q_of(critic, bc, z, a)[0]
    G_cur = torch.autograd.grad(q.sum(), bc, create_graph=True)[0].squeeze(-1)
    match = torch.nn.functional.mse_loss(G_cur, G_tgt.detach())
    return torch.nn.functional.mse_loss(q, y.detach()) + alpha * match, match, G_tgt


def test_loss_equals_the_dense_formula_and_padding_gets_zero_gradient(nets):
    actor, critic, actor_t, critic_t = nets
    b, G = batch(1)
    z, a, r, z2, goals, _, r_item = b
    loss, match, q = critic_loss_fn(*b, critic, actor_t, critic_t, GAMMA, 20.0)
    loss_ref, match_ref, G_tgt = dense_loss(z, a, r, r_item, z2, G, critic, actor_t, critic_t, 20.0)
    torch.testing.assert_close(loss, loss_ref)
    torch.testing.assert_close(match, match_ref)
    assert match > 0
    padding = G[..., 0] == 0
    assert torch.all(G_tgt[padding] == 0)  # no target on padding slots ...
    # ... and the reward's own gate gradient is 2 R_item on active slots (checked on a constant-zero critic)
    zero_t = copy.deepcopy(critic_t)
    torch.nn.init.zeros_(zero_t.head[-1].weight)
    torch.nn.init.zeros_(zero_t.head[-1].bias)
    G_tgt = dense_loss(z, a, r, r_item, z2, G, critic, actor_t, zero_t, 20.0)[2]
    torch.testing.assert_close(G_tgt, 2 * r_item)
    # the weight gradients agree too (the double backward through the packed slots)
    grads = torch.autograd.grad(loss, list(critic.parameters()))
    grads_ref = torch.autograd.grad(loss_ref, list(critic.parameters()))
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref)


def test_alpha_zero_is_the_ddpg_loss(nets):
    actor, critic, actor_t, critic_t = nets
    b, G = batch(2)
    z, a, r, z2, goals, _, r_item = b
    loss0, match0, q = critic_loss_fn(*b, critic, actor_t, critic_t, GAMMA, 0.0)
    loss_ref = dense_loss(z, a, r, r_item, z2, G, critic, actor_t, critic_t, 0.0)[0]
    torch.testing.assert_close(loss0, loss_ref)
    assert match0 == 0
    loss, match, _ = critic_loss_fn(*b, critic, actor_t, critic_t, GAMMA, 5.0)
    torch.testing.assert_close(loss, loss0 + 5.0 * match)


def test_the_encoder_is_trained_by_the_critic_loss_only(nets):
    actor, critic, actor_t, critic_t = nets
    b, _ = batch(3)
    critic_loss = critic_loss_fn(*b, critic, actor_t, critic_t, GAMMA, 20.0)[0]
    expected = torch.autograd.grad(critic_loss, list(critic.encoder.parameters()))
    args = Args(alpha=20.0)
    actor_opt = torch.optim.SGD(actor.parameters(), lr=0.1)
    critic_opt = torch.optim.SGD(critic.parameters(), lr=0.0)  # keep the critic fixed; look at its gradients
    actor_before = copy.deepcopy(actor.state_dict())
    losses = update(b, actor, critic, actor_t, critic_t, actor_opt, critic_opt, args, GAMMA)
    assert sorted(losses) == ["actor_loss", "critic_loss", "grad_match", "q_values"]  # logged as losses/<key>
    assert losses["grad_match"] > 0 and all(isinstance(v, float) for v in losses.values())
    for p, g in zip(critic.encoder.parameters(), expected):
        torch.testing.assert_close(p.grad, g)  # the actor loss added nothing to the encoder's gradient
    assert any(not torch.equal(actor_before[k], v) for k, v in actor.state_dict().items())


def test_buffer_rewards_come_from_the_env_and_match_step():
    env = envs.make("DriveSeek")
    ob, _ = env.reset(seed=3)
    rng = np.random.default_rng(0)
    z, ag, rewards = [np.r_[ob["achieved_goal"], ob["observation"]]], [ob["achieved_goal"]], []
    for t in range(40):
        ob, r, *_ = env.step(rng.uniform(-1, 1, 1).astype(np.float32))
        z.append(np.r_[ob["achieved_goal"], ob["observation"]])
        ag.append(ob["achieved_goal"])
        rewards.append(r)
    buffer = EpisodeBuffer(400, 40, 6, 2, 600, 1, env.unwrapped, rng)
    buffer.store(np.array(z)[None], np.array(ag)[None], ob["desired_goal"][None], np.zeros((1, 40, 1)))
    sample = buffer.sample(256)
    t = [np.flatnonzero((np.array(z)[:-1] == row).all(1))[0] for row in sample.obs]  # positions are unique floats
    np.testing.assert_array_equal(sample.rewards, np.array(rewards)[t])
    np.testing.assert_array_equal(sample.rewards, sample.r_item.sum(-1))  # the count of goals reached (Eq. 14)
    assert set(np.unique(sample.r_item)) <= {0.0, 1.0} and sample.rewards.sum() > 0
    assert not sample.dones.any()  # the goal-set envs never end an episode early


def test_staged_transitions_of_the_episode_in_progress_are_sampled_up_to_the_current_step():
    """The per-step schedule samples the transitions of the episode under way (SB3's buffer), never past its step."""
    T, rng = 40, np.random.default_rng(0)
    buffer = EpisodeBuffer(4000, T, 1, 2, 600, 1, envs.make("DriveSeek").unwrapped, rng)
    steps = np.arange(T + 1, dtype=np.float32)[None, :, None]  # z[t] = t (stored), 1000 + t (in progress)
    goals = np.zeros((1, 600), np.float32)
    buffer.store(steps, np.zeros((1, T + 1, 2)), goals, steps[:, :-1])
    buffer.stage((1000 + steps, np.zeros((1, T + 1, 2)), goals, 1000 + steps[:, :-1]), 3)
    z = buffer.sample(4300).obs[:, 0]
    new = z[z >= 1000] - 1000
    assert set(new) == {0, 1, 2} and abs(len(new) / len(z) - 3 / 43) < 0.02  # uniform over 43 transitions
    assert set(z[z < 1000]) == set(range(T))
    buffer.store(steps, np.zeros((1, T + 1, 2)), goals, steps[:, :-1])  # storing ends the staging
    assert buffer.sample(500).obs.max() < 1000


@pytest.mark.parametrize("schedule,env,alpha,calls", [("step", "DriveSeek", 20.0, [(1, t) for t in range(1, 41)] * 2),
                                                      ("episode", "NoisySeek", 0.0, [(40, 0)] * 3)])
def test_the_step_schedule_trains_after_every_env_step_and_the_policy_moves_within_an_episode(
        tmp_path, monkeypatch, capsys, schedule, env, alpha, calls):
    """Table 4: one gradient step after every env step from step 81 on (2 random episodes), against 40 after each
    episode from the end of the second one; the same number per env step. (The DDPG baseline on NoisySeek runs too.)"""
    seen, train = [], multi_reengage.train

    def spy(n, buffer, nets, *rest):
        losses = train(n, buffer, nets, *rest)
        seen.append(((n, buffer.new_len), nets[0].head[0].weight.detach().clone()))
        return losses

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(multi_reengage, "train", spy)
    multi_reengage.main(Args(env=env, alpha=alpha, total_timesteps=160, random_episodes=2, eval_interval=160,
                             batch_size=16, encoder_dims=[16, 16], hidden_dims=[16], n_test_rollouts=1,
                             update_schedule=schedule))
    assert [call for call, _ in seen] == calls
    assert all(not torch.equal(a, b) for (_, a), (_, b) in zip(seen, seen[1:]))  # the actor moved at every call
    assert f"| {sum(n for n, _ in calls)} gradient steps |" in capsys.readouterr().out.splitlines()[-1]


def test_the_target_is_not_clipped_to_a_sparse_reward_range():
    """The reward counts goals (Eq. 14), so returns are not bounded by 1/(1 - gamma) as in a (0, 1) convention."""
    y = td_target(torch.tensor([1.0, 0.0]), torch.zeros(2), torch.tensor([50.0, -3.0]), GAMMA)
    torch.testing.assert_close(y, torch.tensor([1.0 + GAMMA * 50.0, -GAMMA * 3.0]))


def test_soft_update_moves_the_target_by_one_minus_polyak():
    net, target = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    before = copy.deepcopy(target.state_dict())
    soft_update(net, target, 0.995)
    for k, v in target.state_dict().items():
        torch.testing.assert_close(v, 0.995 * before[k] + 0.005 * net.state_dict()[k])


def test_noise_and_networks_take_their_per_env_and_paper_defaults():
    assert fill_defaults(Args(env="DriveSeek")).noise_eps == 0.05  # Table 4
    assert fill_defaults(Args(env="NoisySeek-v0")).noise_eps == 0.1
    small = fill_defaults(Args())  # DriveSeek: Table 4's batch, smaller networks
    assert (small.batch_size, small.encoder_dims, small.hidden_dims) == (256, [64, 64], [64])
    assert fill_defaults(Args(env="NoisySeek")).batch_size == 64
    paper = fill_defaults(Args(paper=True, batch_size=32))
    assert (paper.batch_size, paper.encoder_dims, paper.hidden_dims) == (32, [400, 400], [400])  # a set flag wins


TINY = ["--total-timesteps", "160", "--random-episodes", "2", "--eval-interval", "80", "--batch-size", "16",
        "--encoder-dims", "16", "16", "--hidden-dims", "16", "--n-test-rollouts", "2"]


def test_a_run_prints_the_header_each_evaluation_and_the_summary(run, tmp_path):
    stdout, ckpt = train_save_and_reload(run, tmp_path, ["multi_reengage.py"], "DriveSeek", *TINY, n_test=2)
    lines = stdout.splitlines()
    assert re.fullmatch(r"multi_reengage \| DriveSeek-v0 \| 160 env steps \| seed 1 \| "
                        r"run runs/DriveSeek__multi_reengage__1__\d+ \| tensorboard --logdir runs", lines[0]), lines[0]
    assert [line[:17] for line in lines[1:3]] == ["step       80/160", "step      160/160"]
    # 4 episodes of 40 steps, 2 random: one gradient step after each env step of the last two
    assert re.fullmatch(rf"multi_reengage done \| success \d\.\d\d \| 160 env steps \| 80 gradient steps \| \d+ s \| "
                        rf"checkpoint {re.escape(ckpt[len(str(tmp_path)) + 1:])} \(evaluate: python multi_reengage.py "
                        rf"--eval-checkpoint .*\)", lines[-1]), lines[-1]
    assert torch.load(ckpt, weights_only=True)["algo"] == "multi_reengage"


class WritesAMarker:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):  # unpickling this would call open(path, "w"): code run by loading
        return open, (self.path, "w")


@pytest.mark.parametrize("kind", ["pickle", "other_checkpoint"])
def test_a_file_that_is_not_a_checkpoint_is_refused_without_running_it(tmp_path, kind):
    """A plain pickle and another script's checkpoint (test_project runs torch pickles and text files via the CLI)."""
    path, marker = tmp_path / "bad.pt", tmp_path / "marker"
    if kind == "pickle":
        path.write_bytes(pickle.dumps({"algo": "multi_reengage", "args": WritesAMarker(str(marker))}))
    else:  # a valid torch file from another script
        torch.save({"algo": "her_ddpg", "actor": {}}, path)
    with pytest.raises(envs.EnvError, match=f"^{re.escape(str(path))} is not a multi_reengage.py checkpoint"):
        multi_reengage.load_checkpoint(str(path))
    assert not marker.exists()


def test_fetchreach_is_refused_in_one_line(run):
    assert_one_line_error(run("multi_reengage.py", "--env", "FetchReach"), "error: FetchReach has no per-goal reward")


@pytest.mark.parametrize("args,message", [(dict(env="ContinuousSeek"), "no per-goal reward"),
                                          (dict(env="PointMaze_UMaze-v3"), "no per-goal reward"),  # (0, 1) reward
                                          (dict(batch_size=0), "--batch-size must be positive"),
                                          (dict(alpha=-1.0), "--alpha"),
                                          (dict(eval_checkpoint="nope.pt"), "no checkpoint at nope.pt")])
def test_bad_input_is_refused(args, message, tmp_path, monkeypatch):
    """The EnvError that __main__ prints as one line (the CLI's path: test_fetchreach_is_refused_in_one_line)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(envs.EnvError, match=re.escape(message)):
        multi_reengage.main(Args(**args))


@pytest.mark.slow
def test_learns_driveseek_at_40k_steps(run):
    """Opt-in (-m slow; ~27 min beside another run): the default run lifts the average reward from the untrained ~9
    to >= 13 by 40k env steps. Measured on seed 1 with the defaults (batch 256, a gradient step every env step):
    8.8-10.4 up to 24k, then 12.4, 16.4, 15.3, 18.0 at 28k-40k (multi_reengage-DriveSeek-batch256). No smaller
    setting learnt fast enough for the default test run."""
    out = run("multi_reengage.py", timeout=3600)
    assert out.returncode == 0, out.stderr
    assert float(re.findall(r"return +(\d+\.\d+)", out.stdout)[-1]) >= 13.0, out.stdout
