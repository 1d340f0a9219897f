"""Where a render's time and memory went: stage timers, peak memory and the tensor-byte tracker."""
