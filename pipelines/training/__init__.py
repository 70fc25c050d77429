"""The Trainer wrapper: training arguments, the Trainer subclass, speed defaults and the feature cache."""
