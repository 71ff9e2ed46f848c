"""One coroutine per call: answer, menu, silent-caller path, queue, bridge, hangup."""
