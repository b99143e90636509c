# MPITRON_CHECK_MPI: use Open MPI's compiler wrapper as CC.
AC_DEFUN([MPITRON_CHECK_MPI], [
  AS_IF([test -z "$CC"], [AC_CHECK_PROGS([CC], [mpicc], [])])
  AS_IF([test -z "$CC"],
    [AC_MSG_ERROR([mpicc not found: install the Debian packages libopenmpi-dev and openmpi-bin])])
  AC_CHECK_PROGS([MPIRUN], [mpirun mpiexec], [])
  AS_IF([test -z "$MPIRUN"],
    [AC_MSG_ERROR([mpirun not found: install the Debian package openmpi-bin])])
  MPI_VERSION_STRING=`$MPIRUN --version 2>/dev/null | head -n 1`
  AC_SUBST([MPIRUN])
  AC_SUBST([MPI_VERSION_STRING])
])
