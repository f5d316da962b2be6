"""Starting training processes (launch.py: ``cnnkit run --backend torch --nproc-per-node N``); the
engines themselves are steppers in cnnkit/training/steppers/ (imported only when asked for)."""
