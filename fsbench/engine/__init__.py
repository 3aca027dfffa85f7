"""The core loops shared by every method: pre-training, episodic meta-training, evaluation."""
