/* tandem's release version, defined once: the binaries' --version, libtandem's
 * tdm_version(), and the Makefile (tandem.pc, the installed library's file
 * name) read it from here. */
#ifndef TANDEM_VERSION_H
#define TANDEM_VERSION_H

#define TDM_VERSION_MAJOR 0
#define TDM_VERSION_MINOR 1
#define TDM_VERSION_PATCH 0
#define TDM_VERSION_STRING "0.1.0"
/* libtandem.so.N: N changes only when the ABI breaks (client/libtandem.map). */
#define TDM_SOVERSION 1

#endif
