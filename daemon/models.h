/* The daemon's side of the profiler (daemon/models.c): state directory,
 * calibration at start-up, loading and saving the model store, and the
 * documents behind `tandemctl models` and `tandemctl calibrate`. */
#ifndef TDM_DAEMON_MODELS_H
#define TDM_DAEMON_MODELS_H

struct server;

/* After the devices started, before the engine: resolves the state
 * directory, calibrates (or reads the cache), creates srv->prof and loads
 * the stored models. 0 or -TDM_E*. */
int models_start(struct server *srv);
/* Once the event loop exists: the periodic save. */
int models_arm(struct server *srv);
/* After the engine stopped: saves the models and frees the profiler. */
void models_stop(struct server *srv);
/* malloc'd JSON documents, NULL on failure. */
char *models_json(struct server *srv);
char *models_calibrate(struct server *srv);

#endif
