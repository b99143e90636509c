# Dependency checks; each fails with the Debian package to install.

# MPITRON_CHECK_NATIVE: -march=native unless --disable-native (clusters
# with mixed CPUs should build with --disable-native).
AC_DEFUN([MPITRON_CHECK_NATIVE], [
  AC_ARG_ENABLE([native],
    [AS_HELP_STRING([--disable-native], [do not tune for the build machine's CPU])],
    [], [enable_native=yes])
  NATIVE_CFLAGS=""
  AS_IF([test "x$enable_native" = xyes], [
    save_CFLAGS=$CFLAGS; CFLAGS="$CFLAGS -march=native"
    AC_MSG_CHECKING([whether $CC accepts -march=native])
    AC_COMPILE_IFELSE([AC_LANG_PROGRAM([], [])],
      [AC_MSG_RESULT([yes]); NATIVE_CFLAGS="-march=native"],
      [AC_MSG_RESULT([no])])
    CFLAGS=$save_CFLAGS])
  AC_SUBST([NATIVE_CFLAGS])
])

AC_DEFUN([MPITRON_CHECK_OPENBLAS], [
  PKG_CHECK_MODULES([OPENBLAS], [openblas], [],
    [OPENBLAS_CFLAGS=""; OPENBLAS_LIBS="-lopenblas"])
  save_LIBS=$LIBS; save_CPPFLAGS=$CPPFLAGS
  LIBS="$OPENBLAS_LIBS $LIBS"; CPPFLAGS="$OPENBLAS_CFLAGS $CPPFLAGS"
  AC_CHECK_HEADER([cblas.h], [],
    [AC_MSG_ERROR([cblas.h not found: install the Debian package libopenblas-dev])])
  AC_CHECK_FUNC([openblas_set_num_threads], [],
    [AC_MSG_ERROR([OpenBLAS not found: install the Debian package libopenblas-dev])])
  LIBS=$save_LIBS; CPPFLAGS=$save_CPPFLAGS
])

AC_DEFUN([MPITRON_CHECK_HDF5], [
  PKG_CHECK_MODULES([HDF5], [hdf5-openmpi], [],
    [AC_MSG_ERROR([parallel HDF5 not found: install the Debian package libhdf5-openmpi-dev])])
  save_LIBS=$LIBS; save_CPPFLAGS=$CPPFLAGS
  LIBS="$HDF5_LIBS $LIBS"; CPPFLAGS="$HDF5_CFLAGS $CPPFLAGS"
  AC_CHECK_FUNC([H5Pset_fapl_mpio], [],
    [AC_MSG_ERROR([HDF5 was built without MPI-IO: install the Debian package libhdf5-openmpi-dev])])
  LIBS=$save_LIBS; CPPFLAGS=$save_CPPFLAGS
])

AC_DEFUN([MPITRON_CHECK_HWLOC], [
  PKG_CHECK_MODULES([HWLOC], [hwloc], [],
    [AC_MSG_ERROR([hwloc not found: install the Debian package libhwloc-dev])])
])

AC_DEFUN([MPITRON_CHECK_CMOCKA], [
  PKG_CHECK_MODULES([CMOCKA], [cmocka], [],
    [AC_MSG_ERROR([CMocka not found: install the Debian package libcmocka-dev])])
])

# MPITRON_CHECK_DNNL: oneDNN 2.x (its C API: dnnl_matmul_desc_init was
# replaced in 3.0), for bf16 matmuls.  Debian ships no pkg-config file for
# it, so the header and the library are checked directly.
AC_DEFUN([MPITRON_CHECK_DNNL], [
  AC_ARG_VAR([DNNL_CFLAGS], [C compiler flags for oneDNN])
  AC_ARG_VAR([DNNL_LIBS], [linker flags for oneDNN (default -ldnnl)])
  : ${DNNL_LIBS="-ldnnl"}
  save_LIBS=$LIBS; save_CPPFLAGS=$CPPFLAGS
  LIBS="$DNNL_LIBS $LIBS"; CPPFLAGS="$DNNL_CFLAGS $CPPFLAGS"
  AC_CHECK_HEADER([dnnl.h], [],
    [AC_MSG_ERROR([dnnl.h not found: install the Debian package libdnnl-dev (oneDNN 2.x)])])
  AC_MSG_CHECKING([for oneDNN 2.x (dnnl_matmul_desc_init)])
  AC_LINK_IFELSE([AC_LANG_PROGRAM([[#include <dnnl.h>
#if DNNL_VERSION_MAJOR != 2
#error oneDNN 2.x needed
#endif]],
      [[dnnl_matmul_desc_t d; return (int)dnnl_matmul_desc_init(&d, 0, 0, 0, 0);]])],
    [AC_MSG_RESULT([yes])],
    [AC_MSG_RESULT([no])
     AC_MSG_ERROR([oneDNN 2.x not found or not linkable with $DNNL_LIBS: install the Debian package libdnnl-dev (2.6 in Debian 12; the 3.x C API differs)])])
  LIBS=$save_LIBS; CPPFLAGS=$save_CPPFLAGS
])
