"""Training the one model: the trainer's state (trainer.py), its plain step (plain_step.py) and the EMA (ema.py).
The DP-SGD step is a privacy mechanism and lives in privacy/dp_sgd.py; a site's round in client/round.py."""
