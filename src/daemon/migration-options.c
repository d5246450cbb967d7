/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <glib.h>
#include <string.h>

#include "domain-abi.h"
#include "migration-options.h"

static DomainFormatFlags destination_format(const MigrationOptions *o) {
        return DOMAIN_FORMAT_MIGRATABLE | (o->offline ? DOMAIN_FORMAT_INACTIVE : 0);
}

static const DomainDef *migrating_def(Domain *d, bool offline) {
        return offline || !d->live_def ? d->def : d->live_def;
}

/* destination_xml was checked against the running guest at Migrate; the definition cannot have
 * changed since (change protection). */
int migration_destination_xml(Domain *d, const MigrationOptions *o, char **ret) {
        _cleanup_(domain_def_freep) DomainDef *def = NULL;
        int r;

        if (!o->destination_xml && !o->destination_name) {
                *ret = domain_get_xml(d, destination_format(o));
                return *ret ? 0 : -ENOMEM;
        }
        if (o->destination_xml) {
                r = domain_def_parse(o->destination_xml, strlen(o->destination_xml), &def, NULL);
                if (r < 0)
                        return r;
        } else if (!(def = domain_def_copy(migrating_def(d, o->offline))))
                return -ENOMEM;
        if (o->destination_name) {
                free(def->name);
                if (!(def->name = strdup(o->destination_name)))
                        return -ENOMEM;
        }
        *ret = domain_def_format(def, destination_format(o));
        return *ret ? 0 : -ENOMEM;
}

int migration_check_destination_options(Domain *d, const MigrationOptions *o, const MigrationUri *hv,
                                        char **ret_error) {
        _cleanup_(domain_def_freep) DomainDef *def = NULL;
        g_autofree char *why = NULL;
        int r;

        if (o->listen_address && o->offline) {
                *ret_error = g_strdup("listen_address: an offline migration has no stream to listen for");
                return -EINVAL;
        }
        if (o->listen_address && hv && hv->kind != MIGRATION_URI_TCP) {
                *ret_error = g_strdup("listen_address needs a tcp: hypervisor URI, not a unix: one");
                return -EINVAL;
        }
        if (!o->destination_xml)
                return 0;
        /* The same strict parser as DefineDomain; then: the same guest, as the guest sees it. */
        r = domain_def_parse(o->destination_xml, strlen(o->destination_xml), &def, &why);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                *ret_error = g_strdup_printf("invalid destination XML: %s", strna(why));
                return -EINVAL;
        }
        if (strcmp(def->name, o->destination_name ?: d->def->name) != 0) {
                *ret_error = g_strdup_printf("the destination XML names '%s', not '%s' (rename with destination_name)",
                                             def->name, o->destination_name ?: d->def->name);
                return -EINVAL;
        }
        r = domain_def_check_abi(migrating_def(d, o->offline), def, &why);
        if (r < 0) {
                *ret_error = g_strdup_printf("the destination XML describes another guest: %s", strna(why));
                return -EINVAL;
        }
        return 0;
}
