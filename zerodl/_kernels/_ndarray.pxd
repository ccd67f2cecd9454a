# Array plumbing shared by the wrappers that take their buffers' addresses straight from
# the arrays (the elementwise kernels, softmax-CE, the 2-D batch norms, affine, the
# optimizers' lists, convolution's padding): inputs
# checked for dtype and made C-contiguous, outputs from new_array.  At 100x100 a typed
# memoryview's set-up cost as much as the loop.  A module that cimports this calls
# cnp.import_array() itself.
cimport numpy as cnp
import numpy as np


cdef inline cnp.ndarray contiguous(cnp.ndarray a):
    """a itself when it is C-contiguous, else a C-contiguous copy (a base-class ndarray
    either way: subclasses are viewed as plain arrays, like np.ascontiguousarray)."""
    if cnp.PyArray_IS_C_CONTIGUOUS(a):
        return a if type(a) is np.ndarray else np.asarray(a)
    return np.ascontiguousarray(a)


cdef inline cnp.ndarray new_array(int ndim, cnp.npy_intp* dims, int typenum):
    """A new C-ordered array; float arrays of a megabyte or more come from the kernels'
    buffer cache (_buffers), which spares them glibc's page faults."""
    cdef Py_ssize_t nbytes = 4 if typenum == cnp.NPY_FLOAT else (
        8 if typenum == cnp.NPY_DOUBLE else 0)
    cdef int k
    for k in range(ndim):
        nbytes *= dims[k]
    if nbytes < (1 << 20):          # _buffers.MIN_BYTES, without a Python call
        return cnp.PyArray_EMPTY(ndim, dims, typenum, 0)
    from zerodl._kernels._buffers import empty
    return empty(tuple([dims[k] for k in range(ndim)]),
                 np.float32 if typenum == cnp.NPY_FLOAT else np.float64)


cdef inline cnp.ndarray new_matrix(Py_ssize_t rows, Py_ssize_t cols, int typenum):
    """new_array of shape (rows, cols)."""
    cdef cnp.npy_intp dims[2]
    dims[0] = rows
    dims[1] = cols
    return new_array(2, dims, typenum)


cdef inline cnp.ndarray empty_like(cnp.ndarray a, int typenum=-1):
    """A new C-ordered array of a's shape, in a's dtype or the given one."""
    return new_array(cnp.PyArray_NDIM(a), cnp.PyArray_DIMS(a),
                     cnp.PyArray_TYPE(a) if typenum < 0 else typenum)


cdef inline void* data_of(a):
    """The address of the ndarray a's first element (a must be an ndarray)."""
    return cnp.PyArray_DATA(<cnp.ndarray>a)


cdef inline bint same_shape(cnp.ndarray a, cnp.ndarray b):
    cdef int k
    if cnp.PyArray_NDIM(a) != cnp.PyArray_NDIM(b):
        return False
    for k in range(cnp.PyArray_NDIM(a)):
        if cnp.PyArray_DIM(a, k) != cnp.PyArray_DIM(b, k):
            return False
    return True


cdef inline bint is_array_of(a, int typenum):
    """a is an ndarray of the given type number in native byte order: a type number alone
    does not tell '>f4' from '<f4', and the checks accept native arrays only."""
    return (cnp.PyArray_Check(a) and cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>a)
            and cnp.PyArray_TYPE(<cnp.ndarray>a) == typenum)


cdef inline bint is_float_array(a):
    """a is an ndarray of float32 or float64 in native byte order: what the checks'
    float_array accepts."""
    return is_array_of(a, cnp.NPY_FLOAT) or is_array_of(a, cnp.NPY_DOUBLE)
