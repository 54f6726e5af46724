"""Fine-tuning: data, backbone + head, strategies, loop, evaluation, saving, CLI."""
