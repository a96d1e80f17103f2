// Train Style page script: keeps progress bars current, refreshes a panel when its job or run ends, and every few
// seconds asks the open panel to redraw if its project changed (tab.py: the hidden sync button).
// Logic lives in Python; this only polls the API and clicks the panels' own (hidden) buttons.
(function () {
    if (window.trainStyleLoaded) return;
    window.trainStyleLoaded = true;
    const ACTIVE = ["queued", "running"];
    const RUN_ACTIVE = ["queued", "starting", "running"];
    // [job box, the hidden button that redraws its panel (also whenever the job's count moves: "each step")]
    const JOB_BOXES = [["#train_style_job", "#train_style_refresh"],
                       ["#train_style_setup_job", "#train_style_train_refresh"],
                       ["#train_style_tag_job", "#train_style_captions_refresh"],
                       ["#train_style_crop_job", "#train_style_crop_refresh"],
                       ["#train_style_direction_job", "#train_style_direction_refresh"],
                       ["#train_style_reg_job", "#train_style_reg_refresh"],
                       ["#train_style_results_job", "#train_style_results_refresh"],
                       ["#train_style_judge_job", "#train_style_judge_refresh"],
                       ["#train_style_autopilot_job", "#train_style_autopilot_refresh", "each step"]];

    function root() {
        if (typeof gradioApp === "function") return gradioApp();
        const app = document.querySelector("gradio-app");
        return (app && app.shadowRoot) || document;
    }

    function click(selector) {
        const button = root().querySelector(selector);
        if (button) button.click();
    }

    // the words and the bar's width come from the server (lib_lorakit/display.py): shown as they are
    function renderJob(box, job) {
        box.dataset.state = job.state;
        const shown = job.display || {};
        const fill = box.querySelector(".ts-fill");
        const text = box.querySelector(".ts-job-text");
        if (fill) fill.style.width = (shown.percent || 0) + "%";
        if (text) text.textContent = shown.text || "";  // a failure's reason: the panel's redraw shows it, once
    }

    async function pollJob(boxSelector, refreshSelector, eachStep) {
        const box = root().querySelector(boxSelector);
        const id = box && box.dataset.jobId;
        if (!id || !ACTIVE.includes(box.dataset.state)) return;
        const r = await fetch("/train-style/v1/jobs/" + encodeURIComponent(id));
        if (!r.ok) return;
        const job = await r.json();
        renderJob(box, job);
        const moved = eachStep && box.dataset.done !== undefined && box.dataset.done !== String(job.done);
        box.dataset.done = String(job.done);
        if (!ACTIVE.includes(job.state) || moved) click(refreshSelector);
    }

    async function pollRun() {
        const box = root().querySelector("#train_style_run");
        const id = box && box.dataset.runId;
        if (!id || !box.dataset.project || !RUN_ACTIVE.includes(box.dataset.state)) return;
        const r = await fetch("/train-style/v1/projects/" + encodeURIComponent(box.dataset.project) + "/runs/" +
                              encodeURIComponent(id));
        if (!r.ok) return;
        const run = await r.json();
        const shown = run.display || {};
        box.dataset.state = run.state;
        const fill = box.querySelector(".ts-fill");
        const state = box.querySelector(".ts-run-state");
        const text = box.querySelector(".ts-run-text");
        if (fill) fill.style.width = (shown.percent || 0) + "%";
        if (state) state.textContent = shown.state || "";
        if (text) text.textContent = shown.text || "";
        if (!RUN_ACTIVE.includes(run.state)) click("#train_style_train_refresh");
    }

    const SYNC_EVERY = 4;  // polls (seconds)
    let sinceSync = 0;

    // the open panel redraws when its project changed (an import from the CLI, another window); not while a job
    // runs (its panel redraws when it ends), nor while the page or the tab is hidden
    function syncOpenPanel() {
        if (++sinceSync < SYNC_EVERY) return;
        sinceSync = 0;
        const tabs = root().querySelector("#train_style_tabs");
        if (document.visibilityState !== "visible" || !tabs || !tabs.offsetParent) return;
        const busy = JOB_BOXES.some(([box]) => {
            const el = root().querySelector(box);
            return el && ACTIVE.includes(el.dataset.state);
        });
        if (!busy) click("#train_style_sync");
    }

    async function poll() {
        for (const [box, refresh, eachStep] of JOB_BOXES) {
            try {
                await pollJob(box, refresh, eachStep);
            } catch (e) {
                console.debug("Train Style: job poll failed", e);
            }
        }
        try {
            await pollRun();
        } catch (e) {
            console.debug("Train Style: run poll failed", e);
        }
        syncOpenPanel();
        setTimeout(poll, 1000);
    }


    setTimeout(poll, 1000);
})();
