# Shared by conv.pyx and pool.pyx: the thread count of a loop over independent tasks.
from zerodl._kernels._util cimport threads_for

# Elements of work per thread below which another thread costs more than it saves.
cdef enum:
    MIN_WORK_PER_THREAD = 32768


cdef inline int task_threads(Py_ssize_t work, Py_ssize_t tasks) except -1:
    """OpenMP threads for `work` elements split into `tasks` independent tasks: at most
    one per MIN_WORK_PER_THREAD elements, per task and per zerodl.get_num_threads()."""
    if work < 2 * MIN_WORK_PER_THREAD or tasks < 2:
        return 1
    # Asked only for large calls: get_num_threads() is not free.
    from zerodl._config import get_num_threads
    return <int> min(threads_for(work, MIN_WORK_PER_THREAD, get_num_threads()), tasks)
