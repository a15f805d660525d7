"""Training (layer: above policies, beside evaluation): the PPO timing agent
(:mod:`pushrl.train.ppo`, :mod:`pushrl.train.ppo_config`), VW from logs
(:mod:`pushrl.train.vw_train`) and VW online by interaction (:mod:`pushrl.train.vw_online`).

The decision-time side (policies, the numpy PPO actor, VW scoring) lives in
:mod:`pushrl.policies`; the serving path imports only that, so it never loads torch or
stable-baselines3.
"""
