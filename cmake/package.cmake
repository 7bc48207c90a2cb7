# SPDX-License-Identifier: MIT
# package.cmake: what `cmake --install` puts where besides the binary and its man page (gateway/CMakeLists.txt),
# and the .deb CPack builds from it (`cpack -G DEB` in a build folder). docs/install.md is the operator's side.
#
#   /usr/bin/settled                          the binary (the schema is compiled in: `settled migrate` needs no files)
#   /usr/share/man/man8/settled.8.gz          settled(8), from the binary's own --help
#   /etc/settled/settled.env                  deploy/settled.conf.sample, every line commented out (a conffile,
#                                             0640 root:settled: it will hold secrets)
#   /lib/systemd/system/settled{,-work}.service
#   /usr/lib/sysusers.d/settled.conf          the system user settled
#   /usr/share/doc/settled/                   README.md, docs/*.md, the sample config
#
# The package's Depends are the shared libraries the binary links, found by dpkg-shlibdeps (libpq5, libcurl4,
# libh2o-evloop0.13, ...), plus adduser for the maintainer scripts in deploy/debian/.
include(GNUInstallDirs)

set(SETTLED_SYSTEMD_UNITDIR /lib/systemd/system CACHE PATH "Where the systemd units are installed")
set(SETTLED_SYSCONFDIR /etc/settled CACHE PATH "Where the settings file of the units is installed")

install(FILES ${CMAKE_SOURCE_DIR}/deploy/settled.service ${CMAKE_SOURCE_DIR}/deploy/settled-work.service
        DESTINATION ${SETTLED_SYSTEMD_UNITDIR})
install(FILES ${CMAKE_SOURCE_DIR}/deploy/settled.sysusers DESTINATION lib/sysusers.d
        RENAME settled.conf)
install(FILES ${CMAKE_SOURCE_DIR}/deploy/settled.conf.sample DESTINATION ${SETTLED_SYSCONFDIR} RENAME settled.env
        PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ)
install(FILES ${CMAKE_SOURCE_DIR}/README.md ${CMAKE_SOURCE_DIR}/deploy/settled.conf.sample
        DESTINATION ${CMAKE_INSTALL_DOCDIR})
file(GLOB SETTLED_DOCS CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/docs/*.md ${CMAKE_SOURCE_DIR}/docs/*.yaml)
install(FILES ${SETTLED_DOCS} DESTINATION ${CMAKE_INSTALL_DOCDIR})

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME settled)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "settled maintainers <settled@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "integration gateway for Stripe, Xero and GoCardless webhooks")
set(CPACK_PACKAGE_DESCRIPTION
    "settled receives signed Stripe, Xero and GoCardless webhooks, stores every delivery durably in PostgreSQL \
before it answers 2xx, and processes the events through a PostgreSQL work queue. It ships systemd units for \
the server (settled.service) and for workers only (settled-work.service).")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr) # whatever CMAKE_INSTALL_PREFIX is: the units run /usr/bin/settled
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT) # settled_0.1.0_amd64.deb
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON) # Depends from the binary's NEEDED libraries, through dpkg-shlibdeps
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "postgresql-client")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "postgresql, redis-server, nginx")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${CMAKE_SOURCE_DIR}/deploy/debian/conffiles ${CMAKE_SOURCE_DIR}/deploy/debian/postinst
    ${CMAKE_SOURCE_DIR}/deploy/debian/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)
include(CPack)
