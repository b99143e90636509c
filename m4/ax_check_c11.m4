# AX_CHECK_C11: require a compiler that accepts -std=c11.
AC_DEFUN([AX_CHECK_C11], [
  save_CFLAGS=$CFLAGS; CFLAGS="$CFLAGS -std=c11"
  AC_MSG_CHECKING([whether $CC accepts -std=c11])
  AC_COMPILE_IFELSE([AC_LANG_PROGRAM([[_Static_assert(1, "c11");]], [])],
    [AC_MSG_RESULT([yes])],
    [AC_MSG_RESULT([no]); AC_MSG_ERROR([a C11 compiler is required (Debian package gcc)])])
  CFLAGS=$save_CFLAGS
])
