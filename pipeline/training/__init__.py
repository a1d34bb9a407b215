"""Training in child processes: the job a task describes (job), starting and watching the
processes from the luigi worker (launch), and what runs inside them (worker, loops, output,
tensorboard). The luigi worker never initialises CUDA and holds no training state."""
