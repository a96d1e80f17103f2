// Train Style page script: keeps the job progress bar current and refreshes the panel when a job ends.
// Logic lives in Python; this only polls the job API and clicks the panel's own buttons.
(function () {
    if (window.trainStyleLoaded) return;
    window.trainStyleLoaded = true;
    const ACTIVE = ["queued", "running"];

    function root() {
        if (typeof gradioApp === "function") return gradioApp();
        const app = document.querySelector("gradio-app");
        return (app && app.shadowRoot) || document;
    }

    function render(box, job) {
        box.dataset.state = job.state;
        const fill = box.querySelector(".ts-fill");
        const text = box.querySelector(".ts-job-text");
        const pct = ACTIVE.includes(job.state) ? (job.total ? Math.round((100 * job.done) / job.total) : 0) : 100;
        if (fill) fill.style.width = pct + "%";
        if (text) {
            let t = job.title + ": " + job.state;
            if (ACTIVE.includes(job.state) && job.total) t += " — " + job.done + "/" + job.total + " " + job.message;
            if (job.error) t += " — " + job.error;
            text.textContent = t;
        }
    }

    async function poll() {
        try {
            const box = root().querySelector("#train_style_job");
            const id = box && box.dataset.jobId;
            if (id && ACTIVE.includes(box.dataset.state)) {
                const r = await fetch("/train-style/v1/jobs/" + encodeURIComponent(id));
                if (r.ok) {
                    const job = await r.json();
                    render(box, job);
                    if (!ACTIVE.includes(job.state)) {
                        const refresh = root().querySelector("#train_style_refresh");
                        if (refresh) refresh.click();
                    }
                }
            }
        } catch (e) {
            console.debug("Train Style: job poll failed", e);
        }
        setTimeout(poll, 1000);
    }

    function loadProjects(attempt) {
        const button = root().querySelector("#train_style_refresh_projects");
        if (button) button.click();
        else if (attempt < 60) setTimeout(() => loadProjects(attempt + 1), 500);
    }

    setTimeout(poll, 1000);
    loadProjects(0);
})();
